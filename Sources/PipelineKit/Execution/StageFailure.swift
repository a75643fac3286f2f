import Foundation
/// Errors a stage raises itself (as opposed to PostgreSQL's own `PGError`).
public enum StageFailure: Error, CustomStringConvertible {
    /// The configuration cannot work against what was found at run time (permanent).
    case config(String)
    /// A value in the data cannot be handled; names the row and column (permanent).
    case data(String)
    /// A failure worth retrying (e.g. a source that went away mid-stream).
    case transient(String)
    /// A stage that depends on another could not get its output.
    case missingInput(String)

    public var isTransient: Bool { if case .transient = self { true } else { false } }

    public var description: String {
        switch self {
        case .config(let text): "configuration: \(text)"
        case .data(let text): "data: \(text)"
        case .transient(let text): text
        case .missingInput(let text): text
        }
    }
}
