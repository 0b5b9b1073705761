// A worker on the OFFICIAL npm `iii-sdk` (0.22.1) for the observability interop tests
// (tests/interop/test_observability_sdks.py): it logs with the SDK's `Logger` and calls on
// from inside its handlers, so its OTel logs and `execute <fn>` spans reach the engine.
//
// The SDK itself sets up OpenTelemetry in `registerWorker` (`initOtel`: enabled unless env
// OTEL_ENABLED is false/0/no/off; service name from OTEL_SERVICE_NAME, else "iii-node";
// spans and logs exported as OTLP JSON over its own WebSocket to `<III_URL>/otel`, batched
// every 100 ms). `Logger` is the one the SDK's docs name; 0.22.1 ships it in its dependency
// `@iii-dev/helpers/observability` (the `iii-sdk` entry point does not re-export it).
//
// Same line protocol as worker.mjs: env III_URL, REGISTER (JSON list of start-up commands);
// commands on stdin, JSON events on stdout (stdout carries nothing else).
//   {"op":"register","function_id":F,"kind":"log"|"chain","message":M,"data":D,"next":G}
//     log:   the handler logs M with D (logger.info) and returns its trace context;
//     chain: the handler logs M with D, triggers G with its input and returns
//            {trace_id, span_id, next: <G's result>}.
//   {"op":"log","tag":T,"message":M,"data":D}  log outside any handler, then {"event":"logged"}.
//   {"op":"exit"}
// Events: {"ready":true}, {"event":"called",...}, {"event":"logged","tag":T,"trace_id","span_id"}.
import { createInterface } from 'node:readline'
import { registerWorker } from 'iii-sdk'
import { Logger, currentSpanId, currentTraceId } from '@iii-dev/helpers/observability'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = console.warn = toStderr

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const worker = registerWorker(process.env.III_URL, {
  workerName: process.env.III_WORKER_NAME || undefined,
})
const logger = new Logger()

const context = () => ({ trace_id: currentTraceId() ?? null, span_id: currentSpanId() ?? null })

function makeHandler(cmd) {
  return async (data) => {
    const ctx = context()
    emit({ event: 'called', function_id: cmd.function_id, data, ...ctx })
    logger.info(cmd.message ?? `in ${cmd.function_id}`, cmd.data ?? {})
    if (cmd.kind === 'chain') {
      const next = await worker.trigger({ function_id: cmd.next, payload: data, timeoutMs: 10000 })
      return { ...ctx, next: next ?? null }
    }
    return ctx
  }
}

async function run(cmd) {
  switch (cmd.op) {
    case 'register':
      worker.registerFunction(cmd.function_id, makeHandler(cmd))
      break
    case 'log':
      logger.info(cmd.message, cmd.data ?? {})
      emit({ event: 'logged', tag: cmd.tag ?? null, ...context() })
      break
    case 'exit':
      await worker.shutdown()
      emit({ event: 'exited' })
      process.exit(0)
  }
}

for (const cmd of JSON.parse(process.env.REGISTER ?? '[]')) await run(cmd)
emit({ ready: true })

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  if (line.trim()) run(JSON.parse(line))
})
rl.on('close', async () => {
  await worker.shutdown()
  process.exit(0)
})
