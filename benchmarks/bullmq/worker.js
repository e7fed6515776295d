'use strict';
// The BullMQ worker of the benchmark: `node worker.js CONCURRENCY QUEUE...`, one BullMQ Worker per queue in this
// process, each with `concurrency` async slots (a BullMQ Worker serves one queue).

const { Worker } = require('bullmq');
const { PREFIX, connect, probe, work } = require('./common');

function main(argv) {
  const concurrency = Number(argv[0]);
  const queues = argv.slice(1);
  if (!concurrency || queues.length === 0) {
    console.error('usage: node worker.js CONCURRENCY QUEUE...');
    process.exit(2);
  }
  process.env.BENCH_CONCURRENCY = String(concurrency);
  const connection = connect();
  const processor = (job) => (job.name === 'probe' ? probe(job.data.enqueued) : work(job.data.workload));
  for (const queue of queues) {
    const worker = new Worker(queue, processor, { connection, prefix: PREFIX, concurrency });
    worker.on('failed', (job, err) => console.error(`job ${job?.id} failed: ${err}`));
  }
}

main(process.argv.slice(2));
