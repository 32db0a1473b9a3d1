// groundtruth for the JVM: each round does the same unit of work 6 times in cpu60, 3 times in
// cpu30 and once in cpu10, so a correct profile shows them at 60%, 30% and 10%.
//
//   javac GroundTruth.java && java -XX:+PreserveFramePointer GroundTruth
//
// -XX:+PreserveFramePointer lets native (frame pointer) stack walks pass through JIT frames;
// async-profiler does not need it.
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
        long s = 1;
        while (true) {
            s = cpu60(s);
            s = cpu30(s);
            s = cpu10(s);
            sink = s;
        }
    }
}
