import Foundation

/// How much of an extract's source a run has taken into account.
///
/// A tracked extract remembers the highest tracking key it could see and the
/// snapshot it saw it in: the next run reads rows above that key, plus rows
/// a little below it (the look-back) that the snapshot could not see because
/// their transaction had not committed yet: those with a key no row had then
/// (`KeyGaps`, kept with the watermark), or, without that list, those whose
/// transaction is not older than the snapshot. An untracked extract is small
/// reference data: a digest of its content tells whether it changed.
public enum Watermark: Sendable, Equatable, Codable, CustomStringConvertible {
    case tracked(key: String, high: Int64?, snapshot: String)
    case content(sha256: String)

    public var description: String {
        switch self {
        case let .tracked(key, high, snapshot): "\(key) ≤ \(high.map(String.init) ?? "none") in snapshot \(snapshot)"
        case let .content(sha256): "content sha256 \(sha256.prefix(12))"
        }
    }

    var json: JSON {
        switch self {
        case let .tracked(key, high, snapshot):
            .object(["key": .string(key), "high": high.map { .int(Int($0)) } ?? .null, "snapshot": .string(snapshot)])
        case let .content(sha256):
            .object(["contentSHA256": .string(sha256)])
        }
    }
}

/// A stage that can say, before the run reads anything, how far its source
/// goes (pgExtract). Collected once at the start of every run of a pipeline
/// with tracked extracts: one session and one snapshot per source connection.
public protocol WatermarkSource: Stage {
    /// Whether the stage follows new rows by a key (rather than by content).
    var isTracked: Bool { get }
    /// The pipeline connection the stage reads from.
    var sourceConnection: String { get }
    /// The watermark, read inside `connection`'s open REPEATABLE READ transaction.
    func currentWatermark(_ connection: PGConnection) throws -> Watermark
    /// Why rows added later could fall below `watermark` and never be read,
    /// if they could: the run is then a full refresh saying so.
    func watermarkProblem(_ watermark: Watermark, _ connection: PGConnection) throws -> String?
    /// The keys within the look-back below `watermark` that no row has,
    /// read in the transaction the watermark was read in (so in its
    /// snapshot); nil for none kept (an untracked extract, or too many
    /// gaps). `previous` is the last run's watermark and gaps when this run
    /// is incremental: only the keys above that watermark need searching.
    func keyGaps(below watermark: Watermark, previous: (watermark: Watermark, gaps: KeyGaps)?,
                 _ connection: PGConnection) throws -> KeyGaps?
}

extension WatermarkSource {
    public func watermarkProblem(_ watermark: Watermark, _ connection: PGConnection) throws -> String? { nil }
    public func keyGaps(below watermark: Watermark, previous: (watermark: Watermark, gaps: KeyGaps)?,
                        _ connection: PGConnection) throws -> KeyGaps? { nil }
}

extension PGConnection {
    /// The transaction watermarks are read in: one snapshot for all of them.
    public static let watermarkTransaction = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
}
