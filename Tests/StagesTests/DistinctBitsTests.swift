import XCTest
@testable import Stages

/// The per-slot sets behind count_distinct, as bitsets and as hash sets.
final class DistinctBitsTests: XCTestCase {
    func testBitsetsThatWouldOutgrowTheirBudgetBecomeSetsWithTheSameCounts() {
        var generator = SystemRandomNumberGenerator()
        let inserts = (0..<20_000).map { _ in (value: Int.random(in: 0..<5_000, using: &generator), slot: Int.random(in: 0..<50, using: &generator)) }
        var roomy = DistinctBits(), tight = DistinctBits()
        roomy.configure(slots: 50)
        // 50 slots × 79 words of 5000 bits exceed 1000 words: the values move into sets midway.
        tight.configure(slots: 50, maxWords: 1_000)
        var expected = [Set<Int>](repeating: [], count: 50)
        for (value, slot) in inserts {
            roomy.insert(value, slot: slot)
            tight.insert(value, slot: slot)
            expected[slot].insert(value)
        }
        for slots in [[0], [3, 7], Array(0..<50), []] {
            let union = slots.reduce(into: Set<Int>()) { $0.formUnion(expected[$1]) }.count
            XCTAssertEqual(roomy.countUnion(slots: slots), union, "\(slots)")
            XCTAssertEqual(tight.countUnion(slots: slots), union, "\(slots)")
        }
    }
}
