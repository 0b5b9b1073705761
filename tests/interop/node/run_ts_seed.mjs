// Runs one TypeScript block of the seed page, read from stdin, on the OFFICIAL npm `iii-sdk`:
// the block is compiled with the TypeScript compiler (type syntax such as `!` removed, nothing
// else), in the page's context — `iii = registerWorker(III_URL)` as in math-add.ts, and a
// stand-in `Logger` — from a
// module file in this directory (so `iii-sdk` resolves). Prints `SEED-READY` after the
// block's top level ran and stays up serving. Usage: node run_ts_seed.mjs TITLE < BLOCK
import { readFileSync, writeFileSync, unlinkSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import ts from 'typescript'

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n')
console.log = console.info = console.debug = toStderr

const title = process.argv[2]
const source = readFileSync(0, 'utf-8')
// 0.22.1 exports no Logger (the page imports it in math-add.ts): a stand-in logging to stderr
const preamble = "import { registerWorker } from 'iii-sdk';\n" +
  "const iii = registerWorker(process.env.III_URL);\n" +
  "class Logger { info(message, data) { console.error(message, JSON.stringify(data)); } }\n"
const js = ts.transpileModule(preamble + source, {
  compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  fileName: title,
}).outputText
const file = join(dirname(fileURLToPath(import.meta.url)), `.seed-${process.pid}.mjs`)
writeFileSync(file, js)
try {
  await import(pathToFileURL(file).href)
} finally {
  unlinkSync(file)
}
process.stdout.write('SEED-READY\n')
