"""crowdtrain on one machine: moto's server for AWS, Chalice's dev server for
API Gateway, a dispatcher for Lambda's SQS event sources, an edge server for
CloudFront, and headless Chromium volunteers."""
