"""Everything the crowdtrain Lambdas run; app.py only wires requests to it."""
