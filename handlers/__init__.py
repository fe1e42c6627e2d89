"""Lambda handlers of realtime-channel.

Every module here imports only the standard library and what the AWS Lambda
Python runtime ships (boto3, botocore, urllib3). The whole package is the
function archive: a function's handler is ``handlers.<module>.handler``.
"""
