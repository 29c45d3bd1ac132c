# expect: Temporal has no workflow with id
from orderflow import order_client
from orderflow.notebook import new_id
from orderflow.workflows import OrderWorkflow

my_order_id = new_id("mine")
my_request = order_client.new_order(
    my_order_id, f"pay-{my_order_id}", address="1 Learner Lane", shipping_task_queue=stack.settings.shipping_task_queue
)
my_handle = await stack.client.start_workflow(
    OrderWorkflow.run, my_request, id=my_order_id, task_queue=stack.settings.orders_task_queue
)
