# groundtruth for Ruby: each round does the same unit of work 6 times in cpu_60, 3 times in
# cpu_30 and once in cpu_10, so a correct profile shows them at 60%, 30% and 10%.
#
#   ruby groundtruth.rb [--rounds N]
#
# --rounds N: do N rounds, then print `groundtruth: cpu SECONDS s wall SECONDS s` on stderr
# and exit (fixed work, for scripts/bench-overhead.sh).

def spin(n)
  x = 0
  n.times { |i| x = (x * 31 + i) & 0xffffffff }
  x
end

def cpu_60 = 6.times { spin(10_000) }
def cpu_30 = 3.times { spin(10_000) }
def cpu_10 = spin(10_000)

at = ARGV.index('--rounds')
rounds = at ? Integer(ARGV[at + 1]) : Float::INFINITY
started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
done = 0
while done < rounds
  cpu_60
  cpu_30
  cpu_10
  done += 1
end
cpu = Process.clock_gettime(Process::CLOCK_PROCESS_CPUTIME_ID)
wall = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
warn format('groundtruth: cpu %.3f s wall %.3f s', cpu, wall)
