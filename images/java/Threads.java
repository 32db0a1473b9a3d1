// groundtruth for per-thread weighting in the JVM: a thread named `busy` spends all its time in
// busy(); another, named `bursty`, works in bursty() for about 2 ms, then sleeps about 8 ms, and
// so uses about a fifth of a CPU. A correct profile shows each function at its thread's share of
// the two threads' CPU time (which on a busy machine is not their share of wall-clock time).
//
//   javac Threads.java && java Threads
//
// Started without profiling flags: eagle-agent reads whole Java stacks from JDK Flight Recorder,
// attached at run time.
public class Threads {
    static volatile long sink;

    // The unit of work, as in GroundTruth.
    static long spin(long x) {
        for (int i = 0; i < 200_000; i++) {
            x = x * 6364136223846793005L + 1442695040888963407L;
        }
        return x;
    }

    static void busy() {
        long s = 1;
        while (true) {
            s = spin(s);
            sink = s;
        }
    }

    static void bursty() throws InterruptedException {
        long s = 1;
        while (true) {
            long until = System.nanoTime() + 2_000_000;
            while (System.nanoTime() < until) {
                s = spin(s);
            }
            sink = s;
            Thread.sleep(8);
        }
    }

    // A thread's native name is set only by the thread itself (HotSpot names the OS thread of
    // the current thread), so each names itself.
    static Thread named(String name, Runnable body) {
        return new Thread(() -> {
            Thread.currentThread().setName(name);
            body.run();
        });
    }

    public static void main(String[] args) throws InterruptedException {
        Thread a = named("busy", Threads::busy);
        Thread b = named("bursty", () -> {
            try {
                bursty();
            } catch (InterruptedException e) {
                // Ends with the JVM.
            }
        });
        a.start();
        b.start();
        a.join();
    }
}
