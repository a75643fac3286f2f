import Foundation

/// Decodes `COPY ... TO STDOUT (FORMAT binary)` rows straight into typed
/// column arrays: no per-value boxing, no strings for numbers or timestamps.
///
/// Values are stored into preallocated per-column buffers, which are copied
/// into the batch's arrays when it is taken: a per-value append to an array
/// inside an array of columns pays uniqueness and capacity checks every time.
/// The buffers' addresses live in this struct, so stores need no dynamic
/// exclusivity checks; `Buffers` only owns the memory. Copies of a decoder
/// share its buffers: decode with one copy only.
public struct BinaryCopyDecoder {
    public let schema: [Field]
    private var sawHeader = false
    private(set) var rowNumber = 0
    /// Rows decoded into the batch being built.
    public private(set) var batchRows = 0

    /// What every binary COPY stream starts with.
    static let signature: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00]

    /// How each field is read, decided once instead of per value.
    enum Kind { case int16, int32, int64, bool, double, text, numeric(scale: Int) }
    private let kinds: [Kind]
    private let buffers: Buffers
    private var ints: [UnsafeMutablePointer<Int64>]
    private var doubles: [UnsafeMutablePointer<Double>]
    private var texts: [UnsafeMutablePointer<String>]
    private var nulls: [UnsafeMutablePointer<Bool>]
    private var hasNulls: [Bool]

    public init(schema: [Field], capacity: Int) {
        self.schema = schema
        let kinds: [Kind] = schema.map { field in
            switch field.type {
            case .smallint: .int16
            case .int, .date: .int32
            case .bigint, .timestamptz: .int64
            case .bool: .bool
            case .double: .double
            case .text: .text
            case .numeric(_, let scale): .numeric(scale: scale)
            }
        }
        self.kinds = kinds
        buffers = Buffers(kinds: kinds, capacity: max(capacity, 1))
        (ints, doubles, texts, nulls) = (buffers.ints, buffers.doubles, buffers.texts, buffers.nulls)
        hasNulls = kinds.map { _ in false }
    }

    /// Takes the batch decoded so far and starts a new one.
    public mutating func takeBatch() -> Batch {
        let rows = batchRows
        guard rows > 0 else { return Batch(schema: schema) }
        let batch = Batch(columns: schema.indices.map { index in
            var column = Column(schema[index])
            switch kinds[index] {
            case .double: column.doubles = Array(UnsafeBufferPointer(start: doubles[index], count: rows))
            case .text: column.texts = Array(UnsafeBufferPointer(start: texts[index], count: rows))
            default: column.ints = Array(UnsafeBufferPointer(start: ints[index], count: rows))
            }
            if hasNulls[index] { column.nulls = Array(UnsafeBufferPointer(start: nulls[index], count: rows)) }
            return column
        })
        batchRows = 0
        for index in hasNulls.indices { hasNulls[index] = false }
        return batch
    }

    /// Decodes one message from `PQgetCopyData` (one row, the first one prefixed by the header).
    public mutating func decode(_ buffer: UnsafeRawBufferPointer) throws {
        var reader = ByteReader(buffer)
        if !sawHeader {
            guard buffer.count >= 19, Array(buffer.prefix(11)) == Self.signature else {
                throw StageFailure.data("COPY stream does not start with the binary signature")
            }
            reader.offset = 15
            let extensionLength = Int(reader.int32())
            reader.offset += extensionLength
            sawHeader = true
        }
        guard reader.remaining >= 2 else { return }
        let fieldCount = Int(reader.int16())
        if fieldCount == -1 { return }
        guard fieldCount == schema.count else {
            throw StageFailure.data("row \(rowNumber + 1) has \(fieldCount) columns, expected \(schema.count)")
        }
        rowNumber += 1
        if batchRows == buffers.capacity {
            buffers.grow()
            (ints, doubles, texts, nulls) = (buffers.ints, buffers.doubles, buffers.texts, buffers.nulls)
        }
        let row = batchRows
        batchRows += 1
        for index in 0..<fieldCount {
            let length = Int(reader.int32())
            if length < 0 {
                setNull(index, row)
                continue
            }
            guard reader.remaining >= length else {
                throw StageFailure.data("row \(rowNumber), column '\(schema[index].name)': truncated value")
            }
            if hasNulls[index] { nulls[index][row] = false }
            switch kinds[index] {
            case .int16: ints[index][row] = Int64(reader.int16())
            case .int32: ints[index][row] = Int64(reader.int32())
            case .int64: ints[index][row] = reader.int64()
            case .bool: ints[index][row] = Int64(reader.byte())
            case .double: doubles[index][row] = Double(bitPattern: UInt64(bitPattern: reader.int64()))
            case .text: texts[index][row] = reader.string(length)
            case .numeric(let scale):
                guard let value = reader.numeric(scale: scale, length: length) else {
                    throw StageFailure.data("row \(rowNumber), column '\(schema[index].name)': NaN or out-of-range numeric for \(schema[index].type)")
                }
                ints[index][row] = value
            }
        }
    }

    private mutating func setNull(_ index: Int, _ row: Int) {
        if !hasNulls[index] {
            nulls[index].update(repeating: false, count: row)
            hasNulls[index] = true
        }
        nulls[index][row] = true
        switch kinds[index] {
        case .double: doubles[index][row] = 0
        case .text: texts[index][row] = ""
        default: ints[index][row] = 0
        }
    }

    /// Owns the decoder's column buffers and frees them with the last copy of
    /// the decoder. Each column has a NULL flag buffer and a value buffer of
    /// its kind's storage; the other two storages get empty buffers.
    private final class Buffers {
        let kinds: [Kind]
        private(set) var capacity: Int
        private(set) var ints: [UnsafeMutablePointer<Int64>]
        private(set) var doubles: [UnsafeMutablePointer<Double>]
        private(set) var texts: [UnsafeMutablePointer<String>]
        private(set) var nulls: [UnsafeMutablePointer<Bool>]

        init(kinds: [Kind], capacity: Int) {
            self.kinds = kinds
            self.capacity = capacity
            ints = kinds.map { .allocate(capacity: Self.storesInts($0) ? capacity : 0) }
            doubles = kinds.map { .allocate(capacity: Self.storesDoubles($0) ? capacity : 0) }
            texts = kinds.map { kind in
                let buffer = UnsafeMutablePointer<String>.allocate(capacity: Self.storesTexts(kind) ? capacity : 0)
                if Self.storesTexts(kind) { buffer.initialize(repeating: "", count: capacity) }
                return buffer
            }
            nulls = kinds.map { _ in .allocate(capacity: capacity) }
        }

        private static func storesTexts(_ kind: Kind) -> Bool { if case .text = kind { true } else { false } }
        private static func storesDoubles(_ kind: Kind) -> Bool { if case .double = kind { true } else { false } }
        private static func storesInts(_ kind: Kind) -> Bool { !storesTexts(kind) && !storesDoubles(kind) }

        deinit {
            for index in kinds.indices {
                if Self.storesTexts(kinds[index]) { texts[index].deinitialize(count: capacity) }
                ints[index].deallocate()
                doubles[index].deallocate()
                texts[index].deallocate()
                nulls[index].deallocate()
            }
        }

        /// Doubles the used buffers, keeping the values so far (for a caller
        /// that does not take a batch every `capacity` rows).
        func grow() {
            let grown = capacity * 2
            func moved<T>(_ old: UnsafeMutablePointer<T>) -> UnsafeMutablePointer<T> {
                let new = UnsafeMutablePointer<T>.allocate(capacity: grown)
                new.moveInitialize(from: old, count: capacity)
                old.deallocate()
                return new
            }
            for (index, kind) in kinds.enumerated() {
                if Self.storesInts(kind) { ints[index] = moved(ints[index]) }
                if Self.storesDoubles(kind) { doubles[index] = moved(doubles[index]) }
                if Self.storesTexts(kind) {
                    texts[index] = moved(texts[index])
                    (texts[index] + capacity).initialize(repeating: "", count: grown - capacity)
                }
                nulls[index] = moved(nulls[index])
            }
            capacity = grown
        }
    }
}

/// Big-endian reads over a raw buffer.
struct ByteReader {
    let buffer: UnsafeRawBufferPointer
    var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    @inline(__always) mutating func byte() -> UInt8 {
        defer { offset += 1 }
        return buffer[offset]
    }

    @inline(__always) mutating func int16() -> Int16 {
        defer { offset += 2 }
        return Int16(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: Int16.self))
    }

    @inline(__always) mutating func int32() -> Int32 {
        defer { offset += 4 }
        return Int32(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: Int32.self))
    }

    @inline(__always) mutating func int64() -> Int64 {
        defer { offset += 8 }
        return Int64(bigEndian: buffer.loadUnaligned(fromByteOffset: offset, as: Int64.self))
    }

    mutating func string(_ length: Int) -> String {
        defer { offset += length }
        return String(decoding: UnsafeRawBufferPointer(rebasing: buffer[offset..<(offset + length)]), as: UTF8.self)
    }

    /// PostgreSQL's binary numeric (base-10000 digits) as an integer scaled by
    /// 10^scale; digits beyond the scale are rounded half away from zero, as
    /// PostgreSQL's own cast to numeric(p, scale) does. nil when out of range.
    mutating func numeric(scale: Int, length: Int) -> Int64? {
        let end = offset + length
        defer { offset = end }
        let digitCount = Int(int16()), weight = Int(int16()), sign = UInt16(bitPattern: int16())
        _ = int16()
        guard sign == 0 || sign == 0x4000 else { return nil }
        var value: Int64 = 0
        var firstDropped: Int64?  // the first decimal digit beyond the scale
        for position in 0..<digitCount {
            let digit = Int64(int16())
            let exponent = 4 * (weight - position) + scale
            if exponent >= 0 {
                guard exponent <= 18 else { return nil }
                let (product, overflow) = digit.multipliedReportingOverflow(by: Int64.pow10(exponent))
                guard !overflow else { return nil }
                let (sum, carry) = value.addingReportingOverflow(product)
                guard !carry else { return nil }
                value = sum
            } else if exponent > -4 {
                let cut = Int64.pow10(-exponent)
                let (sum, carry) = value.addingReportingOverflow(digit / cut)
                guard !carry else { return nil }
                value = sum
                if firstDropped == nil { firstDropped = digit % cut / (cut / 10) }
            } else if firstDropped == nil {
                // A whole group beyond the scale: it holds the first dropped place only when it starts there.
                firstDropped = exponent == -4 ? digit / 1000 : 0
            }
        }
        if let firstDropped, firstDropped >= 5 {
            let (rounded, overflow) = value.addingReportingOverflow(1)
            guard !overflow else { return nil }
            value = rounded
        }
        return sign == 0x4000 ? -value : value
    }
}
