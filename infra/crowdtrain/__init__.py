"""crowdtrain's operator tooling: the `crowdtrain` CLI, the local stack and
the deploy command. Never shipped to Lambda (that is chalicelib/)."""
