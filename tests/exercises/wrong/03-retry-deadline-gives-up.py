# expect: gave up after 3 attempts
from datetime import timedelta

from temporalio.common import RetryPolicy

my_attempt_timeout = timedelta(seconds=1)
my_retry_policy = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_attempts=3, non_retryable_error_types=["CardDeclined"]
)
