import Foundation

/// Decodes `COPY ... TO STDOUT (FORMAT binary)` rows straight into typed
/// column arrays: no per-value boxing, no strings for numbers or timestamps.
public struct BinaryCopyDecoder {
    public let schema: [Field]
    private var sawHeader = false
    private(set) var rowNumber = 0
    public private(set) var batch: Batch
    /// Rows in `batch`, kept here: asking the batch copies a column per row.
    public private(set) var batchRows = 0

    private static let signature: [UInt8] = Array("PGCOPY\n".utf8) + [0xFF, 0x0D, 0x0A, 0x00]

    /// How each field is read, decided once instead of per value.
    private enum Kind { case int16, int32, int64, bool, double, text, numeric(scale: Int) }
    private let kinds: [Kind]

    public init(schema: [Field], capacity: Int) {
        self.schema = schema
        batch = Batch(schema: schema, capacity: capacity)
        kinds = schema.map { field in
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
    }

    /// Takes the batch decoded so far and starts a new one.
    public mutating func takeBatch(capacity: Int) -> Batch {
        let full = batch
        batch = Batch(schema: schema, capacity: capacity)
        batchRows = 0
        return full
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
        batchRows += 1
        for index in 0..<fieldCount {
            let length = Int(reader.int32())
            if length < 0 {
                appendNull(index)
                continue
            }
            guard reader.remaining >= length else {
                throw StageFailure.data("row \(rowNumber), column '\(schema[index].name)': truncated value")
            }
            try appendValue(index, &reader, length)
        }
    }

    private mutating func appendNull(_ index: Int) {
        switch schema[index].type.storage {
        case .int: batch.columns[index].append(int: nil)
        case .double: batch.columns[index].append(double: nil)
        case .text: batch.columns[index].append(text: nil)
        }
    }

    private mutating func appendValue(_ index: Int, _ reader: inout ByteReader, _ length: Int) throws {
        switch kinds[index] {
        case .int16: batch.columns[index].append(int: Int64(reader.int16()))
        case .int32: batch.columns[index].append(int: Int64(reader.int32()))
        case .int64: batch.columns[index].append(int: reader.int64())
        case .bool: batch.columns[index].append(int: Int64(reader.byte()))
        case .double: batch.columns[index].append(double: Double(bitPattern: UInt64(bitPattern: reader.int64())))
        case .text: batch.columns[index].append(text: reader.string(length))
        case .numeric(let scale):
            guard let value = reader.numeric(scale: scale, length: length) else {
                throw StageFailure.data("row \(rowNumber), column '\(schema[index].name)': NaN or out-of-range numeric for \(schema[index].type)")
            }
            batch.columns[index].append(int: value)
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

    /// PostgreSQL's binary numeric (base-10000 digits) as an integer scaled by 10^scale,
    /// truncating digits beyond the scale.
    mutating func numeric(scale: Int, length: Int) -> Int64? {
        let end = offset + length
        defer { offset = end }
        let digitCount = Int(int16()), weight = Int(int16()), sign = UInt16(bitPattern: int16())
        _ = int16()
        guard sign == 0 || sign == 0x4000 else { return nil }
        var value: Int64 = 0
        for position in 0..<digitCount {
            let digit = Int64(int16())
            let exponent = 4 * (weight - position) + scale
            if exponent >= 0 {
                guard exponent <= 18 else { return nil }
                let (product, overflow) = digit.multipliedReportingOverflow(by: pow10(exponent))
                guard !overflow else { return nil }
                value += product
            } else if exponent > -4 {
                value += digit / pow10(-exponent)
            }
        }
        return sign == 0x4000 ? -value : value
    }

    private func pow10(_ n: Int) -> Int64 { (0..<n).reduce(1) { acc, _ in acc * 10 } }
}
