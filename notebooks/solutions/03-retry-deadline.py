from datetime import timedelta

from temporalio.common import RetryPolicy

# One attempt may run 1 s: the hanging attempt is cut after 1 s, not after the deadline.
my_attempt_timeout = timedelta(seconds=1)
my_retry_policy = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),  # waits of 0.2, 0.4, 0.8 s between attempts...
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=1),  # ...never more than 1 s
    maximum_attempts=8,  # enough for the 4 the charge needs; the deadline stops the rest
    non_retryable_error_types=["CardDeclined"],  # trying a declined card again changes nothing
)
