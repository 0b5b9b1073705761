// The seed page's Node examples `math::add` (math-add.ts) and `math::aggregation`
// (cron-trigger.ts), on the OFFICIAL npm `iii-sdk` 0.22.1, for tests/interop/test_state_seed.py.
//
// The two function bodies are the page's, unchanged (TypeScript without annotations is this
// JavaScript). The page's cron binding of math::aggregation is kept too: the engine has no
// cron worker yet, so the test calls the function directly instead of waiting 30 minutes.
// Env: III_URL. Prints `SEED-READY` on stdout once the page's own top-level trigger of
// math::add has returned; the SDK's logger output goes to stderr.
import { registerWorker } from 'iii-sdk';

const toStderr = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
console.log = console.info = console.debug = toStderr;

// The page imports `Logger` from 'iii-sdk'; 0.22.1 (the version our interop pins) exports
// only registerWorker, TriggerAction and InvocationError, so this stand-in logs to stderr.
class Logger {
  info(message, data) { toStderr(message, JSON.stringify(data)); }
}

const iii = registerWorker(process.env.III_URL ?? 'ws://localhost:49134');

// --- math-add.ts
iii.registerFunction(
  'math::add',
  async (input) => {
    const logger = new Logger();
    const result = input.a + input.b;
    const id = crypto.randomUUID();
    await iii.trigger({ function_id: 'state::set', payload: { scope: 'math', key: id, value: result } });
    logger.info('Math add completed', { id, result });
    return { id, result };
  },
  { description: 'Add two numbers and store result' },
);

// The page has `await iii.trigger(...)` here. SDK 0.22.1 sends a call queued before the
// socket opened ahead of its engine::workers::register, while the engine buffers this
// connection's registrations until that register (protocol §4.4, invocations are never
// buffered): the very first call meets function_not_found. So the page's call is repeated
// until the registration has landed; any other failure still ends the script.
for (let tries = 0; ; tries++) {
  try {
    await iii.trigger({ function_id: 'math::add', payload: { a: 2, b: 3 } });
    break;
  } catch (err) {
    if (err?.code !== 'function_not_found' || tries >= 100) throw err;
    toStderr(`state_seed: math::add not routable yet (${tries})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// --- cron-trigger.ts
iii.registerFunction('math::aggregation', async () => {
  const logger = new Logger();
  const results = await iii.trigger({ function_id: 'state::list', payload: { scope: 'math' } });
  const values = results.filter((r) => typeof r === 'number');
  const sum = values.reduce((a, b) => a + b, 0);
  const aggregation = { count: values.length, sum, average: values.length ? sum / values.length : 0 };
  logger.info('Math aggregation completed', aggregation);
  return aggregation;
});

iii.registerTrigger({
  type: 'cron',
  function_id: 'math::aggregation',
  config: { expression: '0 */30 * * * * *' }, // every 30 minutes
});

process.stdout.write('SEED-READY\n');
