from orderflow import order_client
from orderflow.notebook import new_id
from orderflow.workflows import OrderWorkflow

my_order_id = new_id("mine")
my_request = order_client.new_order(
    my_order_id,
    f"pay-{my_order_id}",
    address="1 Learner Lane",
    shipping_task_queue=stack.settings.shipping_task_queue,  # where this kernel's shipping worker polls
)

my_handle = await stack.client.start_workflow(
    OrderWorkflow.run,
    my_request,
    id=order_client.order_workflow_id(my_order_id),
    task_queue=stack.settings.orders_task_queue,
)
await order_client.wait_for_review(stack.client, my_order_id)  # an Update that returns once it awaits review
print(await my_handle.execute_update(OrderWorkflow.approve))
