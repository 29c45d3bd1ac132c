# expect: CardDeclined was retried
from datetime import timedelta

from temporalio.common import RetryPolicy

my_attempt_timeout = timedelta(seconds=1)
my_retry_policy = RetryPolicy(initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=1))
