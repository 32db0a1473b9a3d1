// groundtruth for Node.js: each round does the same unit of work 6 times in cpu60, 3 times in
// cpu30 and once in cpu10, so a correct profile shows them at 60%, 30% and 10%.
//
//   node --perf-basic-prof --interpreted-frames-native-stack groundtruth.js
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

let s = 1;
for (;;) {
  s = cpu60(s);
  s = cpu30(s);
  s = cpu10(s);
}
