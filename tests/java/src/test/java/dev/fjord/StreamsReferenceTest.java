package dev.fjord;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import java.util.Map;
import java.util.Set;

import org.junit.jupiter.api.Test;

/**
 * The model that {@link StreamsTest} judges the Streams application by, on a hand-worked input (window 10 s, grace
 * 5 s), without a broker. {@code ./test.sh} runs this class to fill {@code ~/.m2} before the broker tests run in
 * parallel (running a test resolves surefire's JUnit provider too, which a run that matches no test skips).
 */
class StreamsReferenceTest {
    @Test
    void graceBoundariesAndPerPartitionStreamTime() {
        assertEquals(10_000, StreamsTest.W);
        assertEquals(5_000, StreamsTest.G);
        List<StreamsTest.Line> lines = List.of(
                new StreamsTest.Line(0, 1_000, "a b a"),
                // Stream time 14999: window [0, 10000) is still open (closes at stream time 15000).
                new StreamsTest.Line(0, 14_999, "a"),
                // Late, in the last millisecond of [0, 10000), 1 ms before it closes: counts.
                new StreamsTest.Line(0, 9_999, "b"),
                // Stream time 15000: [0, 10000) closes.
                new StreamsTest.Line(0, 15_000, "c"),
                // Late, beyond the grace period: dropped.
                new StreamsTest.Line(0, 0, "a"),
                // Partition 1 has its own stream time: partition 0's 15000 does not drop this.
                new StreamsTest.Line(1, 50, "q"),
                new StreamsTest.Line(0, 40_000, "z"),
                new StreamsTest.Line(1, 20_000, "r"));
        StreamsTest.Reference ref = StreamsTest.reference(lines);
        assertEquals(Map.of("a@0", 2L, "b@0", 2L, "a@10000", 1L, "c@10000", 1L, "q@0", 1L), ref.closed());
        assertEquals(Set.of("z@40000", "r@20000"), ref.open());
        assertEquals(1, ref.dropped());
    }
}
