"""Deploying a stage to a real AWS account (`crowdtrain deploy`)."""
