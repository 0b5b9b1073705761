// The seed's `orders::create` example (use-functions-and-triggers.md, trigger-enqueue.ts) on
// the OFFICIAL npm `iii-sdk`, plus the `orders::process-order` consumer it enqueues to.
//
// env III_URL. stdout carries only JSON lines: {"event":"ready"} once both functions are
// registered, then {"event":"order", "order": ...} for every job delivered to
// orders::process-order. The SDK's own console output goes to stderr.
import { registerWorker, TriggerAction } from 'iii-sdk'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = toStderr
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const iii = registerWorker(process.env.III_URL, { workerName: 'node-orders' })

// --- the seed example, as written (TypeScript annotations: none to strip) ---
iii.registerFunction('orders::create', async (input) => {
  const order = { id: crypto.randomUUID(), ...input }
  const result = await iii.trigger({
    function_id: 'orders::process-order',
    payload: order,
    action: TriggerAction.Enqueue({ queue: 'payment' }),
  })
  return { orderId: order.id, messageReceiptId: result.messageReceiptId }
})
// --- end of the seed example ---

iii.registerFunction('orders::process-order', async (order) => {
  emit({ event: 'order', order })
  return { paid: true }
})

emit({ event: 'ready' })
