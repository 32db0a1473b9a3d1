// groundtruth for Node.js: each round does the same unit of work 6 times in cpu60, 3 times in
// cpu30 and once in cpu10, so a correct profile shows them at 60%, 30% and 10%.
//
//   node --perf-basic-prof --interpreted-frames-native-stack groundtruth.js [--rounds N]
//
// --rounds N: do N rounds, then print `groundtruth: cpu SECONDS s wall SECONDS s` on stderr
// and exit (fixed work, for scripts/bench-overhead.sh).
//
// --perf-basic-prof makes V8 write /tmp/perf-PID.map, which names JIT code for native
// profilers; --interpreted-frames-native-stack does the same for code not yet compiled.
'use strict';

function spin(x) {
  for (let i = 0; i < 200000; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
  }
  return x;
}

function cpu60(s) { for (let i = 0; i < 6; i++) s = spin(s); return s; }
function cpu30(s) { for (let i = 0; i < 3; i++) s = spin(s); return s; }
function cpu10(s) { return spin(s); }

const at = process.argv.indexOf('--rounds');
const rounds = at > 0 ? Number(process.argv[at + 1]) : Infinity;
const started = process.hrtime.bigint();
let s = 1;
for (let done = 0; done < rounds; done++) {
  s = cpu60(s);
  s = cpu30(s);
  s = cpu10(s);
}
const cpu = process.cpuUsage();
const wall = Number(process.hrtime.bigint() - started) / 1e9;
process.stderr.write(`groundtruth: cpu ${((cpu.user + cpu.system) / 1e6).toFixed(3)} s wall ${wall.toFixed(3)} s\n`);
