// groundtruth for the JVM: each round does the same unit of work 6 times in cpu60, 3 times in
// cpu30 and once in cpu10, so a correct profile shows them at 60%, 30% and 10%.
//
//   javac GroundTruth.java && java GroundTruth [--rounds N]
//
// --rounds N: do N rounds, then print `groundtruth: cpu SECONDS s wall SECONDS s` on stderr
// and exit (fixed work, for scripts/bench-overhead.sh).
//
// Started without profiling flags: eagle-agent reads whole Java stacks from JDK Flight Recorder,
// attached at run time.
public class GroundTruth {
    static long sink;

    // The unit of work. Kept out of line (it is large for the inliner after the first
    // compile), so each caller's share is what the caller itself spends in it.
    static long spin(long x) {
        for (int i = 0; i < 200_000; i++) {
            x = x * 6364136223846793005L + 1442695040888963407L;
        }
        return x;
    }

    static long cpu60(long s) { for (int i = 0; i < 6; i++) s = spin(s); return s; }
    static long cpu30(long s) { for (int i = 0; i < 3; i++) s = spin(s); return s; }
    static long cpu10(long s) { return spin(s); }

    public static void main(String[] args) {
        long rounds = args.length == 2 && args[0].equals("--rounds") ? Long.parseLong(args[1]) : -1;
        long started = System.nanoTime();
        long s = 1;
        for (long done = 0; rounds < 0 || done < rounds; done++) {
            s = cpu60(s);
            s = cpu30(s);
            s = cpu10(s);
            sink = s;
        }
        long cpu = ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean()).getProcessCpuTime();
        System.err.printf("groundtruth: cpu %.3f s wall %.3f s%n", cpu / 1e9, (System.nanoTime() - started) / 1e9);
    }
}
