import Foundation

/// How a run treats what earlier runs already wrote, decided once at its start.
public struct RefreshPlan: Sendable {
    public enum Mode: Sendable, Equatable {
        /// Everything is recomputed; `reason` says why (first run, --full-refresh, a changed pipeline...).
        case full(reason: String)
        /// Only what changed since `since` is recomputed.
        case incremental(since: RefreshState)
    }

    public let mode: Mode
    /// Every extract's watermark, taken before any stage ran.
    public let current: [String: Watermark]
    public let fingerprint: RefreshFingerprint
    public let asOf: CivilDate
    /// Finds the tracked extracts' key gaps below `current`; none without it.
    let gapSearch: KeyGapSearch?

    public init(mode: Mode, current: [String: Watermark], fingerprint: RefreshFingerprint, asOf: CivilDate,
                gapSearch: KeyGapSearch? = nil) {
        self.mode = mode
        self.current = current
        self.fingerprint = fingerprint
        self.asOf = asOf
        self.gapSearch = gapSearch
    }

    public var previous: RefreshState? {
        if case .incremental(let since) = mode { return since }
        return nil
    }

    public var isIncremental: Bool { previous != nil }

    /// One line for people: what kind of run and why.
    public var summary: String {
        switch mode {
        case .full(let reason): "full refresh: \(reason)"
        case .incremental(let since): "incremental since run \(since.shortRunID) (as_of \(since.asOf))"
        }
    }

    /// The state a writing stage commits with its rows; with the key gaps
    /// when their search has ended (it does not wait for them).
    public func state(runID: UUID) -> RefreshState {
        RefreshState(runID: runID, asOf: asOf, fingerprint: fingerprint, watermarks: current, gaps: gapSearch?.result ?? [:])
    }

    /// For the lineage: mode, reason, and the watermarks before and after.
    public var json: JSON {
        var object: [String: JSON] = [
            "mode": .string(isIncremental ? "incremental" : "full"),
            "watermarks": .object(current.mapValues(\.json)),
        ]
        switch mode {
        case .full(let reason):
            object["reason"] = .string(reason)
        case .incremental(let since):
            object["sinceRun"] = .string(since.runID.uuidString.lowercased())
            object["sinceAsOf"] = .string(since.asOf.description)
            object["previousWatermarks"] = .object(since.watermarks.mapValues(\.json))
        }
        return .object(object)
    }
}

/// A run that must not start incrementally, e.g. an as_of before the last run's.
public struct RefreshRefused: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
