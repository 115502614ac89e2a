import AssentCore
import Foundation

/// A saved, named audience: the definition is kept, the members are worked
/// out whenever it is exported or measured (so they are always today's).
public struct Segment: Sendable, Equatable {
    /// A slug, e.g. `events-de`.
    public var id: String
    public var name: String
    public var description: String
    public var query: AudienceQuery
    /// Who saved it first: `staff:<email>`, `api_key:<id>` or `command line`.
    public var createdBy: String
    public var createdAt: Date
    public var updatedAt: Date

    public init(id: String, name: String, description: String = "", query: AudienceQuery, createdBy: String, createdAt: Date, updatedAt: Date? = nil) {
        self.id = id
        self.name = name
        self.description = description
        self.query = query
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }

    /// The definition as stored (JSON, sorted keys, dates in milliseconds).
    public var definitionJSON: String { String(decoding: try! JSONEncoder.sortedISO.encode(query), as: UTF8.self) }

    public static func query(fromJSON text: String) throws -> AudienceQuery {
        try JSONDecoder.iso.decode(AudienceQuery.self, from: Data(text.utf8))
    }

    func validateFields() throws {
        var problems: [ValidationError] = []
        do { try Topic.validateKey(id, field: "id") } catch let DomainError.invalid(e) { problems += e }
        if name.trimmingCharacters(in: .whitespaces).isEmpty { problems.append(.init(field: "name", "is required")) }
        do { try TextCheck.check(name, field: "name", max: Limits.titleLength) } catch let DomainError.invalid(e) { problems += e }
        do { try TextCheck.check(description, field: "description", max: Limits.descriptionLength, allowNewlines: true) } catch let DomainError.invalid(e) { problems += e }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}

/// A segment's size on one day (UTC); measured again that day, it is replaced.
public struct SegmentSize: Sendable, Equatable {
    public var segmentID: String
    /// `2026-11-29`.
    public var day: String
    public var size: Int
    public var measuredAt: Date

    public init(segmentID: String, day: String, size: Int, measuredAt: Date) {
        self.segmentID = segmentID
        self.day = day
        self.size = size
        self.measuredAt = measuredAt
    }
}

extension Ledger {
    /// Saves a new segment after checking its fields and its audience definition.
    public func createSegment(id: String, name: String, description: String = "", query: AudienceQuery, createdBy: String) async throws -> Segment {
        let segment = Segment(id: id, name: name.trimmingCharacters(in: .whitespaces), description: description, query: query,
                              createdBy: createdBy, createdAt: now)
        try await validateSegment(segment)
        do { try await store.insertSegment(segment) } catch StoreError.duplicate {
            throw DomainError.conflict(field: "id", message: "a segment '\(id)' already exists")
        }
        return segment
    }

    /// Changes a segment's name, description or definition; its size history stays.
    public func updateSegment(id: String, _ edit: (inout Segment) -> Void) async throws -> Segment {
        var segment = try await existingSegment(id)
        edit(&segment)
        segment.id = id
        segment.name = segment.name.trimmingCharacters(in: .whitespaces)
        segment.updatedAt = now
        try await validateSegment(segment)
        try await store.updateSegment(segment)
        return segment
    }

    public func existingSegment(_ id: String) async throws -> Segment {
        try Topic.validateKey(id, field: "id")
        guard let segment = try await store.segment(id: id) else { throw DomainError.notFound(what: "segment", id: id) }
        return segment
    }

    /// Deletes a segment and its size history (the definition is not evidence; the audit log keeps who did it).
    public func deleteSegment(id: String) async throws {
        _ = try await existingSegment(id)
        guard try await store.deleteSegment(id: id) else { throw DomainError.notFound(what: "segment", id: id) }
    }

    private func validateSegment(_ segment: Segment) async throws {
        var problems: [ValidationError] = []
        do { try segment.validateFields() } catch let DomainError.invalid(e) { problems += e }
        if segment.query.categories.count > 20 { problems.append(.init(field: "category", "at most 20 categories")) }
        do { try await validate(segment.query) } catch let DomainError.invalid(e) { problems += e }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }

    /// Counts a segment's audience now and records it as today's size.
    @discardableResult
    public func measureSegment(_ segment: Segment) async throws -> SegmentSize {
        var count = 0
        try await audience(segment.query) { count += $0.count }
        let at = now
        let size = SegmentSize(segmentID: segment.id, day: at.isoDay, size: count, measuredAt: at)
        try await store.recordSegmentSize(size)
        return size
    }

    /// Measures every segment not yet measured today; returns how many were.
    /// A segment whose definition no longer holds (a topic retired) is skipped.
    @discardableResult
    public func measureSegmentsDue() async throws -> Int {
        let today = now.isoDay
        var measured = 0
        for segment in try await store.segments() {
            if let latest = try await store.segmentSizes(segmentID: segment.id, limit: 1).last, latest.day == today { continue }
            do {
                try await measureSegment(segment)
                measured += 1
            } catch DomainError.invalid {
                continue
            }
        }
        return measured
    }
}
