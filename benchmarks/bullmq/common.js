'use strict';
// BullMQ in the benchmark (see benchmarks/sys_bullmq.py): what worker.js and enqueue.js share. The settings come
// from the harness's environment and match benchmarks/common.py; every job ends with an INCR of the done key on
// an ioredis connection of the jobs' own, and a probe's first act is an RPUSH of (start - enqueued) seconds.

const fs = require('node:fs');
const http = require('node:http');
const { setTimeout: sleep } = require('node:timers/promises');
const IORedis = require('ioredis');

const REDIS_URL = process.env.BENCH_REDIS_URL || 'redis://127.0.0.1:6379/15';
const HTTP_URL = process.env.BENCH_HTTP_URL || 'http://127.0.0.1:8099/';
const PG_DSN = process.env.BENCH_PG_DSN || 'host=127.0.0.1 port=5432 user=postgres dbname=jiggler_bench';
const FILE = process.env.BENCH_FILE || '/tmp/jiggler-bench-lines.txt';
const PREFIX = 'bull'; // BullMQ's own key prefix: its keys never meet the harness's (bench:...)
const QUEUE = 'bench';
const DONE_KEY = 'bench:done';
const LATENCY_KEY = 'bench:latency';
const WARMUP_KEY = 'bench:warmup';
const SLEEP_MS = 200;
const PG_SLEEP = 0.1;
const FIB_N = 25;
const CHUNK = 1000;
// Jobs leave nothing behind when done, as in the other systems (BullMQ keeps every completed job by default).
const JOB_OPTIONS = { removeOnComplete: true };

/** A new ioredis connection to the harness's Redis (null retries per request: what BullMQ's workers need). */
function connect() {
  return new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
}

/** Wall-clock seconds with sub-millisecond precision (the probes' clock, as Python's time.time()). */
function now() {
  return (performance.timeOrigin + performance.now()) / 1000;
}

let jobsRedis = null;
/** The jobs' own connection (ioredis pipelines every concurrent call on it). */
function redis() {
  jobsRedis ??= connect();
  return jobsRedis;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1024 });
/** GET the harness's slow local server on a keep-alive connection and read the whole answer. */
function httpGet() {
  return new Promise((resolve, reject) => {
    http
      .get(HTTP_URL, { agent }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}

let pgPool = null;
/** SELECT pg_sleep(0.1) on a pool of up to one connection per concurrent job (made on first need). */
async function pgQuery() {
  if (pgPool === null) {
    const { Pool } = require('pg');
    const params = Object.fromEntries(PG_DSN.split(/\s+/).map((part) => part.split('=', 2)));
    const max = Number(process.env.BENCH_CONCURRENCY || 10);
    pgPool = new Pool({ host: params.host, port: Number(params.port), user: params.user, database: params.dbname, max });
  }
  await pgPool.query('SELECT pg_sleep($1)', [PG_SLEEP]);
}

function fib(n) {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

const WORKLOADS = {
  noop: async () => {},
  sleep: () => sleep(SLEEP_MS),
  http: httpGet,
  pg: pgQuery,
  file: async () => fs.appendFileSync(FILE, `${process.pid} ${now()}\n`),
  fib: async () => fib(FIB_N),
};

/** The benchmark's job: the workload, then the INCR the harness counts. */
async function work(workload) {
  await WORKLOADS[workload]();
  await redis().incr(DONE_KEY);
}

/** The latency rows' job: `enqueued` is the enqueuer's now() (0 for a warm-up). */
async function probe(enqueued) {
  const start = now();
  await redis().rpush(enqueued > 0 ? LATENCY_KEY : WARMUP_KEY, start - enqueued);
}

module.exports = { CHUNK, JOB_OPTIONS, PREFIX, QUEUE, WARMUP_KEY, connect, now, probe, sleep, work };
