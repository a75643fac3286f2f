/// A set of small dense integers per slot (per group, window and measure):
/// growable bitsets in one flat array while they stay small, and hash sets
/// once they would not.
///
/// The integers number the distinct values of the whole input, so every
/// bitset is as wide as the input has distinct values: a few hundred lessons
/// for Dost, but a value unique to each event would make groups × events bits.
/// Past 2^24 words (128 MiB) the bitsets become sets, whose size follows the
/// values each slot actually holds.
struct DistinctBits {
    private var words: [UInt64] = []
    private var stride = 0
    private var slots = 0
    private var sets: [Set<Int>]?
    private var maxWords = 0

    /// Empty sets for `slots` slots; bitsets up to `maxWords` 64-bit words in all.
    mutating func configure(slots: Int, maxWords: Int = 1 << 24) {
        self.slots = slots
        self.maxWords = maxWords
        stride = 0
        words = []
        sets = nil
    }

    mutating func insert(_ value: Int, slot: Int) {
        if sets != nil {
            sets![slot].insert(value)
            return
        }
        let word = value >> 6
        // Doubling keeps relayouts rare; slots exist for count-distinct measures only.
        if word >= stride {
            grow(to: max(word + 1, stride * 2))
            if sets != nil { return insert(value, slot: slot) }
        }
        words[slot * stride + word] |= 1 << UInt64(value & 63)
    }

    /// The number of values in the union of `slots`.
    func countUnion(slots: [Int]) -> Int {
        if let sets {
            guard let first = slots.first else { return 0 }
            return slots.dropFirst().reduce(into: sets[first]) { $0.formUnion(sets[$1]) }.count
        }
        guard stride > 0 else { return 0 }
        var total = 0
        for word in 0..<stride {
            var union: UInt64 = 0
            for slot in slots { union |= words[slot * stride + word] }
            total += union.nonzeroBitCount
        }
        return total
    }

    private mutating func grow(to newStride: Int) {
        let (wanted, overflow) = slots.multipliedReportingOverflow(by: newStride)
        guard !overflow, wanted <= maxWords else {
            sets = (0..<slots).map { slot in
                var set = Set<Int>()
                for word in 0..<stride {
                    var bits = words[slot * stride + word]
                    while bits != 0 {
                        set.insert(word << 6 + bits.trailingZeroBitCount)
                        bits &= bits - 1
                    }
                }
                return set
            }
            words = []
            stride = 0
            return
        }
        var grown = [UInt64](repeating: 0, count: slots * newStride)
        if stride > 0 {
            for slot in 0..<slots {
                for word in 0..<stride { grown[slot * newStride + word] = words[slot * stride + word] }
            }
        }
        words = grown
        stride = newStride
    }
}
