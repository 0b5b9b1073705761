// The HTTP worker with the OFFICIAL npm `iii-sdk` (0.22.1), for tests/interop/test_http_node.py.
//
// Registers the seed page's http-trigger.ts (its code below the marker, as written: TypeScript
// without annotations is this JavaScript) and handlers of the official SDK tests' shapes, on
// routes under PREFIX (argv[2]): path and query parameters, a raw JSON body read through
// `request_body`, urlencoded and multipart bodies passed raw, an upload streamed back, SSE.
// Env: III_URL. Prints `READY` once every trigger is registered.
import { registerWorker } from 'iii-sdk'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = toStderr

// The page imports `Logger` from 'iii-sdk'; 0.22.1 exports only registerWorker,
// TriggerAction and InvocationError, so this stand-in logs to stderr.
class Logger {
  info(message, data) { toStderr(message, JSON.stringify(data)) }
}

const iii = registerWorker(process.env.III_URL)
const prefix = process.argv[2]

// --- http-trigger.ts
iii.registerFunction('math::multiply', async (req) => {
  const logger = new Logger();
  const { a, b } = req.body;
  const result = a * b;
  logger.info('Math multiply', { a, b, result });
  return {
    status_code: 200,
    body: { result },
    headers: { 'Content-Type': 'application/json' },
  };
});

iii.registerTrigger({
  type: 'http',
  function_id: 'math::multiply',
  config: { api_path: '/math/multiply', http_method: 'POST' },
});
// --- end of http-trigger.ts

const readAll = async (reader) => {
  const chunks = []
  for await (const chunk of reader.stream) chunks.push(Buffer.from(chunk))
  return Buffer.concat(chunks)
}

const respond = (res, status, headers, body) => {
  res.sendMessage(JSON.stringify({ type: 'set_status', status_code: status }))
  res.sendMessage(JSON.stringify({ type: 'set_headers', headers }))
  res.stream.end(body)
}

const routes = {
  'GET items/:id': async (req) => ({ status_code: 200, body: { id: req.path_params.id, q: req.query_params.q } }),
  'POST created': async (req) => ({ status_code: 201, body: { got: req.body } }),
  'GET text': async () => ({ status_code: 200, body: 'plain words', headers: { 'Content-Type': 'text/plain' } }),
  'POST raw': async (req) => {
    const raw = await readAll(req.request_body)
    respond(req.response, 200, { 'content-type': 'application/json' },
            Buffer.from(JSON.stringify({ parsed: req.body, raw: raw.toString('utf-8') })))
  },
  'POST echo': async (req) => {
    // streamed back chunk by chunk, as it arrives
    req.response.sendMessage(JSON.stringify({ type: 'set_headers', headers: { 'content-type': req.headers['content-type'] || 'application/octet-stream' } }))
    for await (const chunk of req.request_body.stream) {
      if (!req.response.stream.write(Buffer.from(chunk))) await new Promise((r) => req.response.stream.once('drain', r))
    }
    await new Promise((r) => req.response.stream.end(r))
  },
  'GET sse': async (req) => {
  const res = req.response
  res.sendMessage(JSON.stringify({ type: 'set_headers', headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' } }))
  for (let i = 1; i <= 3; i++) {
    res.stream.write(Buffer.from(`id: ${i}\ndata: {"n":${i}}\n\n`))
    await new Promise((r) => setTimeout(r, 100))
  }
  await new Promise((r) => res.stream.end(r))
  },
}

for (const [key, handler] of Object.entries(routes)) {
  const [method, path] = key.split(' ')
  const id = `${prefix}::${path.replace(/[^a-z]/g, '')}`
  iii.registerFunction(id, handler)
  iii.registerTrigger({ type: 'http', function_id: id, config: { api_path: `${prefix}/${path}`, http_method: method } })
}

await new Promise((r) => setTimeout(r, 300))
process.stdout.write('READY\n')
