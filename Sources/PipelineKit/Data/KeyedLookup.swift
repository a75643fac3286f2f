import Foundation

/// A lookup an incremental run reads by key: a consumer that recomputes a
/// few groups asks for the rows of their keys only, instead of every row of
/// the input (all users for the few hundred whose groups changed).
///
/// Every read also takes the rows of the keys that changed since the last
/// run. `lookupBuild` hands one on only where the rows of the keys read
/// answer as all rows would (see `LookupBuild.keyed`).
public struct KeyedLookup: Sendable {
    public let changes: LookupChanges
    private let read: @Sendable (_ keys: Set<Int64>?, _ scan: ScanContext) throws -> Lookup

    /// `read` returns the lookup of the rows with these integer keys, or of
    /// every row for nil.
    public init(changedKeys: Set<[Value]>, read: @escaping @Sendable (_ keys: Set<Int64>?, _ scan: ScanContext) throws -> Lookup) {
        self.changes = LookupChanges(changedKeys: changedKeys, normalization: .none)
        self.read = read
    }

    /// The rows of `keys` (and of the changed keys): a lookup that answers
    /// for those keys exactly as the whole one would.
    public func rows(for keys: Set<Int64>, _ scan: ScanContext) throws -> Lookup {
        var asked = keys
        for key in changes.changedKeys ?? [] { if case .int(let value)? = key.first { asked.insert(value) } }
        return try read(asked, scan)
    }

    /// Every row, for a consumer that needs them all.
    public func whole(_ scan: ScanContext) throws -> Lookup { try read(nil, scan) }
}

/// Which keys of a lookup may have rows that changed since the last run.
public struct LookupChanges: Sendable {
    /// The normalised keys whose rows are new since the last run; nil when
    /// unknown (a full refresh, or an input whose changes cannot be told),
    /// which consumers must treat as "anything changed".
    public let changedKeys: Set<[Value]>?
    public let normalization: KeyNormalization

    public init(changedKeys: Set<[Value]>?, normalization: KeyNormalization) {
        self.changedKeys = changedKeys
        self.normalization = normalization
    }

    /// Whether rows for this raw key may have changed since the last run.
    public func mayHaveChanged(forRaw key: [Value]) -> Bool {
        guard let changedKeys else { return true }
        guard let normalised = normalization.apply(key) else { return false }
        return changedKeys.contains(normalised)
    }
}
