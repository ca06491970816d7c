"""Job templates: the models and datasets `crowdtrain create` builds."""
