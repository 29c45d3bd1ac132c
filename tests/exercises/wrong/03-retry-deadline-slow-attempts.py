# expect: did not finish within the 10 s deadline
from datetime import timedelta

from temporalio.common import RetryPolicy

my_attempt_timeout = timedelta(seconds=30)  # the hanging attempt eats the whole deadline
my_retry_policy = RetryPolicy(initial_interval=timedelta(milliseconds=200), non_retryable_error_types=["CardDeclined"])
