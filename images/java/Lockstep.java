// lockstep for the JVM: work that repeats in step with a sampler's clock, the worst case for a
// sampler whose period is fixed (images/lockstep/lockstep.c is the native one).
//
// In every PERIOD of System.nanoTime() (CLOCK_MONOTONIC, the clock Flight Recorder's sampler
// sleeps on) it spends the first 60 % in cpu60, the next 30 % in cpu30 and the last 10 % in
// cpu10. A sampler that wakes every PERIOD exactly finds it at the same point of that cycle
// every time and sees one method only.
//
//   javac Lockstep.java && java Lockstep --period-us US [--cpu-seconds S]
//
// --cpu-seconds S  exit once the thread has used S seconds of CPU, and print on stderr the CPU
//                  time each method got, as `lockstep: cpu60 SECONDS cpu30 SECONDS cpu10 SECONDS`:
//                  the truth a profile is checked against when other work on the machine takes
//                  the CPU away at some points of the cycle more than at others.
//
// Started without profiling flags, as GroundTruth.java.
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;

public class Lockstep {
    static long periodNs = 10_000_000;
    static long sink;
    static final ThreadMXBean THREADS = ManagementFactory.getThreadMXBean();
    // CPU time of the method each index names, and the clock at the last switch between them.
    static final long[] CPU = new long[3];
    static long switchedAt;

    static void charge(int method) {
        long now = THREADS.getCurrentThreadCpuTime();
        CPU[method] += now - switchedAt;
        switchedAt = now;
    }

    // Computes in short bursts, reading the clock between them, until the cycle leaves
    // [from, to) (fractions of the period). Most of the time goes to the burst, not the clock.
    static void computeWhileIn(double from, double to) {
        while (true) {
            double phase = (double) (System.nanoTime() % periodNs) / periodNs;
            if (phase < from || phase >= to) {
                return;
            }
            long x = sink;
            for (int i = 0; i < 2000; i++) {
                x = x * 6364136223846793005L + 1442695040888963407L;
            }
            sink = x;
        }
    }

    static void cpu60() { computeWhileIn(0.0, 0.6); }
    static void cpu30() { computeWhileIn(0.6, 0.9); }
    static void cpu10() { computeWhileIn(0.9, 1.0); }

    public static void main(String[] args) {
        double cpuSeconds = -1;
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--period-us" -> periodNs = Long.parseLong(args[i + 1]) * 1000;
                case "--cpu-seconds" -> cpuSeconds = Double.parseDouble(args[i + 1]);
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        long limit = cpuSeconds < 0 ? Long.MAX_VALUE : (long) (cpuSeconds * 1e9);
        switchedAt = THREADS.getCurrentThreadCpuTime();
        while (switchedAt < limit) {
            // Each method runs only in its part of the cycle, so between calls the others return
            // at once: the time is charged to whichever part of the cycle it is.
            cpu60();
            charge(0);
            cpu30();
            charge(1);
            cpu10();
            charge(2);
        }
        System.err.printf("lockstep: cpu60 %.3f cpu30 %.3f cpu10 %.3f%n", CPU[0] / 1e9, CPU[1] / 1e9, CPU[2] / 1e9);
    }
}
