# groundtruth for per-thread weighting: the main thread compresses in `compress` (zlib's deflate,
# which runs without the interpreter lock); another thread, named `waiter`, waits in `idle_wait`,
# waking every millisecond, and uses next to no CPU. The waiter takes the interpreter lock each
# time it wakes, so a reader of the running Ruby thread mostly finds it, in `sleep`, while the
# CPU goes to deflate. A correct profile shows each function at its thread's share of the
# process's CPU time.
#
#   ruby threads.rb

require 'zlib'

DATA = Random.new(1).bytes(1 << 20)

def compress = loop { Zlib::Deflate.deflate(DATA, Zlib::BEST_COMPRESSION) }

def idle_wait = loop { sleep 0.001 }

waiter = Thread.new { idle_wait }
waiter.name = 'waiter'
compress
