'use strict';
// The BullMQ enqueuer of the benchmark, BullMQ's own Queue client:
//
//   node enqueue.js preload WORKLOAD N               push N jobs with queue.addBulk, 1,000 a call
//   node enqueue.js single N | bulk N                timed pushes of noop jobs; prints {"jobs": N, "seconds": S}
//   node enqueue.js paced RATE SECONDS QUEUE...      probes at a steady rate; prints {"sent", "seconds", "behind_ms"}

const { Queue } = require('bullmq');
const { CHUNK, JOB_OPTIONS, PREFIX, QUEUE, WARMUP_KEY, connect, now, sleep } = require('./common');

const connection = connect();
const queues = new Map();

/** One Queue object per queue name, all on one connection. */
function queueFor(name) {
  if (!queues.has(name)) {
    queues.set(name, new Queue(name, { connection, prefix: PREFIX, defaultJobOptions: JOB_OPTIONS }));
  }
  return queues.get(name);
}

async function addBulk(workload, count) {
  const queue = queueFor(QUEUE);
  for (let start = 0; start < count; start += CHUNK) {
    const size = Math.min(CHUNK, count - start);
    await queue.addBulk(Array.from({ length: size }, () => ({ name: 'work', data: { workload } })));
  }
}

async function timed(mode, count) {
  const queue = queueFor(QUEUE);
  await queue.add('work', { workload: 'noop' }); // untimed: opens the connection, loads the scripts
  const started = performance.now();
  if (mode === 'bulk') {
    await addBulk('noop', count);
  } else {
    for (let i = 0; i < count; i++) await queue.add('work', { workload: 'noop' });
  }
  return { jobs: count, seconds: (performance.now() - started) / 1000 };
}

/** One warm-up probe per queue; returns when the worker has run them all, and has had time to go idle again. */
async function warmUp(names, deadlineS = 60) {
  for (const name of names) await queueFor(name).add('probe', { enqueued: 0 });
  const ends = performance.now() + deadlineS * 1000;
  while ((await connection.llen(WARMUP_KEY)) < names.length && performance.now() < ends) await sleep(10);
  await sleep(1000);
}

/** A fixed pseudo-random sequence (mulberry32), so every run sends the same queues in the same order. */
function rng(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Probes at `rate` per second for `seconds`, each to a random one of `names`, against absolute deadlines. */
async function paced(rate, seconds, names) {
  await warmUp(names);
  const random = rng(13);
  const targets = Array.from({ length: Math.round(rate * seconds) }, () => names[Math.floor(random() * names.length)]);
  let behind = 0;
  const started = performance.now();
  for (let i = 0; i < targets.length; i++) {
    const wait = started + (1000 * i) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    else behind = Math.max(behind, -wait);
    await queueFor(targets[i]).add('probe', { enqueued: now() });
  }
  return { sent: targets.length, seconds: (performance.now() - started) / 1000, behind_ms: behind };
}

async function main(argv) {
  const [command, ...rest] = argv;
  if (command === 'preload') await addBulk(rest[0], Number(rest[1]));
  else if (command === 'single' || command === 'bulk') console.log(JSON.stringify(await timed(command, Number(rest[0]))));
  else if (command === 'paced') console.log(JSON.stringify(await paced(Number(rest[0]), Number(rest[1]), rest.slice(2))));
  else throw new Error('usage: node enqueue.js preload WORKLOAD N | single N | bulk N | paced RATE SECONDS QUEUE...');
  for (const queue of queues.values()) await queue.close();
  await connection.quit();
}

main(process.argv.slice(2)).catch((err) => {
  console.error(err);
  process.exit(1);
});
