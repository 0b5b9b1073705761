// A worker built on the OFFICIAL npm `iii-sdk` (0.22.1), driven by the interop tests.
//
// Same line protocol as tests/interop/official_py/worker.py (read that docstring): env
// III_URL, optional III_WORKER_NAME, REGISTER (JSON list of start-up commands); commands on
// stdin, JSON events on stdout. Invariant: stdout carries only those JSON lines — the SDK's
// own console output is sent to stderr.
import { createInterface } from 'node:readline'
import { registerWorker, TriggerAction } from 'iii-sdk'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = toStderr

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const worker = registerWorker(process.env.III_URL, {
  workerName: process.env.III_WORKER_NAME || undefined,
})

const bindings = new Map()
const provider = {
  async registerTrigger(config) {
    bindings.set(config.id, config)
    emit({ event: 'trigger_registered', config })
  },
  async unregisterTrigger(config) {
    bindings.delete(config.id)
    emit({ event: 'trigger_unregistered', id: config.id })
  },
}

function makeHandler(functionId, kind, cmd) {
  return async (data) => {
    emit({ event: 'called', function_id: functionId, data })
    if (kind === 'add') return { c: data.a + data.b }
    if (kind === 'const') return cmd.value
    if (kind === 'slow') {
      await sleep(cmd.ms ?? 30000)
      return { slept: true }
    }
    return data
  }
}

async function trigger(cmd) {
  const req = { function_id: cmd.function_id, payload: cmd.payload ?? null }
  if (cmd.void) req.action = TriggerAction.Void()
  if (cmd.timeout_ms) req.timeoutMs = cmd.timeout_ms
  try {
    const result = await worker.trigger(req)
    emit({ event: 'result', tag: cmd.tag ?? null, ok: true, result: result ?? null })
  } catch (err) {
    emit({ event: 'result', tag: cmd.tag ?? null, ok: false, code: err?.code ?? String(err?.name),
      message: err?.message ?? String(err) })
  }
}

async function run(cmd) {
  switch (cmd.op) {
    case 'register':
      worker.registerFunction(cmd.function_id, makeHandler(cmd.function_id, cmd.kind ?? 'echo', cmd))
      break
    case 'trigger':
      trigger(cmd) // not awaited: several calls may be in flight
      break
    case 'trigger_type':
      worker.registerTriggerType({ id: cmd.type_id, description: 'interop test type' }, provider)
      break
    case 'bind':
      worker.registerTrigger({ type: cmd.trigger_type, function_id: cmd.function_id, config: cmd.config ?? null })
      break
    case 'fire':
      for (const b of bindings.values()) {
        await trigger({ tag: cmd.tag, function_id: b.function_id, payload: { fired: b.config } })
      }
      break
    case 'exit':
      await worker.shutdown()
      emit({ event: 'exited' })
      process.exit(0)
  }
}

for (const cmd of JSON.parse(process.env.REGISTER ?? '[]')) await run(cmd)
emit({ ready: true, worker_id: worker.workerId ?? null })

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line.trim()) run(JSON.parse(line))
})
rl.on('close', async () => {
  await worker.shutdown()
  process.exit(0)
})
