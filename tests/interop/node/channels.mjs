// Channel scenarios on the OFFICIAL npm `iii-sdk` (0.22.1), driven by
// tests/interop/test_channels_sdks.py; the same roles as tests/interop/official_py/channels.py
// (read that docstring): `serve PREFIX`, `send FID SIZE`, `roundtrip FID SIZE`. Env III_URL;
// JSON lines on stdout, the SDK's own console output on stderr.
import { createHash } from 'node:crypto'
import { registerWorker } from 'iii-sdk'
import { createChannel } from 'iii-sdk/helpers'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = toStderr
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const CHUNK = 64 * 1024

function pattern(size) {
  const seed = createHash('sha256').update('iii-channels').digest()
  const block = Buffer.concat(Array(CHUNK / 32).fill(seed))
  return Buffer.concat(Array(Math.ceil(size / block.length) + 1).fill(block)).subarray(0, size)
}

const invert = (buf) => Buffer.from(buf.map((x) => 255 - x))
const sha = (buf) => createHash('sha256').update(buf).digest('hex')

async function writeWithMessages(writer, payload) {
  for (let i = 0; i < payload.length; i += CHUNK) {
    if (i / CHUNK === 1 || i / CHUNK === 3) writer.sendMessage(`message at chunk ${i / CHUNK}`)
    const part = payload.subarray(i, i + CHUNK)
    if (!writer.stream.write(part)) await new Promise((r) => writer.stream.once('drain', r))
  }
  await new Promise((resolve, reject) => writer.stream.end((err) => (err ? reject(err) : resolve())))
}

async function readAll(reader, messages) {
  reader.onMessage((m) => messages.push(m))
  const chunks = []
  for await (const chunk of reader.stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk))
  return Buffer.concat(chunks)
}

const iii = registerWorker(process.env.III_URL)
const [role, a, b] = process.argv.slice(2)

if (role === 'serve') {
  iii.registerFunction(`${a}::digest`, async ({ reader }) => {
    const messages = []
    const raw = await readAll(reader, messages)
    return { bytes: raw.length, sha256: sha(raw), messages }
  })
  iii.registerFunction(`${a}::invert`, async ({ reader, writer }) => {
    let n = 0
    for await (const chunk of reader.stream) {
      n++
      writer.sendMessage(JSON.stringify({ type: 'progress', chunks: n }))
      const up = invert(Buffer.from(chunk))
      if (!writer.stream.write(up)) await new Promise((r) => writer.stream.once('drain', r))
    }
    writer.sendMessage(JSON.stringify({ type: 'done', chunks: n }))
    await new Promise((resolve) => writer.stream.end(resolve))
    return { chunks: n }
  })
  await sleep(300)
  emit({ ready: true })
  process.stdin.resume()
  process.stdin.on('end', () => process.exit(0))
} else {
  const payload = pattern(Number(b))
  if (role === 'send') {
    const ch = await createChannel(iii)
    const call = iii.trigger({ function_id: a, payload: { reader: ch.readerRef }, timeoutMs: 60000 })
    await writeWithMessages(ch.writer, payload)
    emit({ result: await call, sha256: sha(payload) })
  } else {
    const inbound = await createChannel(iii)
    const outbound = await createChannel(iii)
    const call = iii.trigger({ function_id: a, payload: { reader: inbound.readerRef, writer: outbound.writerRef },
                               timeoutMs: 60000 })
    const messages = []
    const [, back] = await Promise.all([writeWithMessages(inbound.writer, payload), readAll(outbound.reader, messages)])
    const expected = invert(payload)
    emit({ result: await call, ok: back.equals(expected), bytes: back.length, messages: messages.map((m) => JSON.parse(m)) })
  }
  process.exit(0)
}
