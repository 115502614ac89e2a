import AssentCore
import AssentStore
import Foundation
import Hummingbird

/// The audience part of a segment body: which topics, how to match, filters.
struct SegmentDefinitionBody: Decodable, Sendable {
    var topics: [String]?
    var categories: [String]?
    var match: String?
    var locale: String?
    var createdSince: Date?
    var changedSince: Date?

    func query() throws -> AudienceQuery {
        var problems: [ValidationError] = []
        let match = match.flatMap(AudienceQuery.Match.init(rawValue:))
        if self.match != nil && match == nil { problems.append(.init(field: "match", "must be any or all")) }
        if (topics?.count ?? 0) > 100 { problems.append(.init(field: "topics", "at most 100 topics")) }
        if !problems.isEmpty { throw APIError.invalid(problems) }
        return AudienceQuery(topics: topics ?? [], categories: categories ?? [], match: match ?? .any, locale: locale,
                             createdSince: createdSince, changedSince: changedSince)
    }
}

struct CreateSegmentBody: StrictBody {
    static let allowedKeys: Set<String> = ["id", "name", "description", "topics", "categories", "match", "locale", "createdSince", "changedSince"]
    var id: String
    var name: String
    var description: String?
    var definition: SegmentDefinitionBody

    enum CodingKeys: String, CodingKey { case id, name, description }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        name = try c.decode(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        definition = try SegmentDefinitionBody(from: decoder)
    }
}

/// Only the fields given change; for locale, createdSince and changedSince null clears the filter.
struct PatchSegmentBody: StrictBody {
    static let allowedKeys: Set<String> = ["name", "description", "topics", "categories", "match", "locale", "createdSince", "changedSince"]
    var name: String?
    var description: String?
    var topics: [String]?
    var categories: [String]?
    var match: String?
    var locale: Patch<String>
    var createdSince: Patch<Date>
    var changedSince: Patch<Date>

    enum CodingKeys: String, CodingKey { case name, description, topics, categories, match, locale, createdSince, changedSince }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        topics = try c.decodeIfPresent([String].self, forKey: .topics)
        categories = try c.decodeIfPresent([String].self, forKey: .categories)
        match = try c.decodeIfPresent(String.self, forKey: .match)
        locale = try c.decodePatch(String.self, forKey: .locale)
        createdSince = try c.decodePatch(Date.self, forKey: .createdSince)
        changedSince = try c.decodePatch(Date.self, forKey: .changedSince)
    }
}

struct SegmentSizeJSON: Encodable {
    var day: String
    var size: Int
    var measuredAt: Date

    init(_ s: SegmentSize) {
        day = s.day
        size = s.size
        measuredAt = s.measuredAt
    }
}

struct SegmentJSON: Encodable {
    var id: String
    var name: String
    var description: String
    var topics: [String]
    var categories: [String]
    var match: String
    var locale: String?
    var createdSince: Date?
    var changedSince: Date?
    var createdBy: String
    var createdAt: Date
    var updatedAt: Date
    var latestSize: SegmentSizeJSON?
    var sizes: [SegmentSizeJSON]?

    init(_ s: Segment, sizes: [SegmentSize], includeHistory: Bool) {
        id = s.id
        name = s.name
        description = s.description
        topics = s.query.topics
        categories = s.query.categories
        match = s.query.match.rawValue
        locale = s.query.locale
        createdSince = s.query.createdSince
        changedSince = s.query.changedSince
        createdBy = s.createdBy
        createdAt = s.createdAt
        updatedAt = s.updatedAt
        latestSize = sizes.last.map(SegmentSizeJSON.init)
        self.sizes = includeHistory ? sizes.map(SegmentSizeJSON.init) : nil
    }

    enum CodingKeys: String, CodingKey {
        case id, name, description, topics, categories, match, locale, createdSince, changedSince, createdBy, createdAt, updatedAt, latestSize, sizes
    }

    // Absent optionals are written as null so every field is always present (sizes only on one segment).
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(name, forKey: .name)
        try c.encode(description, forKey: .description)
        try c.encode(topics, forKey: .topics)
        try c.encode(categories, forKey: .categories)
        try c.encode(match, forKey: .match)
        try c.encode(locale, forKey: .locale)
        try c.encode(createdSince, forKey: .createdSince)
        try c.encode(changedSince, forKey: .changedSince)
        try c.encode(createdBy, forKey: .createdBy)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(updatedAt, forKey: .updatedAt)
        try c.encode(latestSize, forKey: .latestSize)
        if let sizes { try c.encode(sizes, forKey: .sizes) }
    }
}

extension API {
    /// Days of size history returned with one segment.
    static let segmentHistoryDays = 365

    var segmentRoutes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/api/v1/segments", scope: .read) { _, _ in try await listSegments() },
            APIRoute(method: .post, path: "/api/v1/segments", scope: .write) { r, c in try await createSegment(r, c) },
            APIRoute(method: .get, path: "/api/v1/segments/{id}", scope: .read) { _, c in try await getSegment(c) },
            APIRoute(method: .patch, path: "/api/v1/segments/{id}", scope: .write) { r, c in try await patchSegment(r, c) },
            APIRoute(method: .delete, path: "/api/v1/segments/{id}", scope: .admin) { _, c in try await deleteSegment(c) },
            APIRoute(method: .post, path: "/api/v1/segments/{id}/measure", scope: .write) { _, c in try await measureSegment(c) },
            // Rows carry each person's links, which act as them: a write key is needed.
            APIRoute(method: .get, path: "/api/v1/segments/{id}/audience", scope: .write) { r, c in try await segmentAudience(r, c) },
        ]
    }

    func segmentID(_ context: AssentRequestContext) throws -> String {
        let id = try context.parameters.require("id")
        try Topic.validateKey(id, field: "id")
        return id
    }

    func listSegments() async throws -> APIResponse {
        var items: [SegmentJSON] = []
        for segment in try await ledger.store.segments() {
            items.append(SegmentJSON(segment, sizes: try await ledger.store.segmentSizes(segmentID: segment.id, limit: 1), includeHistory: false))
        }
        return try APIResponse(json: ListJSON(items: items))
    }

    func createSegment(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateSegmentBody.self, context: context)
        let segment: Segment
        do {
            segment = try await ledger.createSegment(id: body.id, name: body.name, description: body.description ?? "",
                                                     query: try body.definition.query(), createdBy: "API key \(context.apiKey?.id ?? "?")")
        } catch DomainError.invalid(let errors) {
            throw APIError.invalid(Self.wireFields(errors))
        }
        try await ledger.audit(nil, "segment_create", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "segment:\(segment.id)",
                               ipAddress: context.remoteIP)
        var response = try APIResponse(status: .created, json: SegmentJSON(segment, sizes: [], includeHistory: true))
        response.headers[.location] = "/api/v1/segments/\(segment.id)"
        return response
    }

    func getSegment(_ context: AssentRequestContext) async throws -> APIResponse {
        let segment = try await ledger.existingSegment(segmentID(context))
        let sizes = try await ledger.store.segmentSizes(segmentID: segment.id, limit: Self.segmentHistoryDays)
        return try APIResponse(json: SegmentJSON(segment, sizes: sizes, includeHistory: true))
    }

    func patchSegment(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try segmentID(context)
        let body = try await request.decodeJSON(PatchSegmentBody.self, context: context)
        if let text = body.match, AudienceQuery.Match(rawValue: text) == nil { throw APIError.invalid(field: "match", "must be any or all") }
        let update: (inout Segment) -> Void = { s in
            if let name = body.name { s.name = name }
            if let description = body.description { s.description = description }
            if let topics = body.topics { s.query.topics = topics }
            if let categories = body.categories { s.query.categories = categories }
            if let match = body.match.flatMap(AudienceQuery.Match.init(rawValue:)) { s.query.match = match }
            body.locale.apply(to: &s.query.locale)
            body.createdSince.apply(to: &s.query.createdSince)
            body.changedSince.apply(to: &s.query.changedSince)
        }
        let segment: Segment
        do { segment = try await ledger.updateSegment(id: id, update) } catch DomainError.invalid(let errors) {
            throw APIError.invalid(Self.wireFields(errors))
        }
        try await ledger.audit(nil, "segment_update", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "segment:\(id)", ipAddress: context.remoteIP)
        let sizes = try await ledger.store.segmentSizes(segmentID: id, limit: Self.segmentHistoryDays)
        return try APIResponse(json: SegmentJSON(segment, sizes: sizes, includeHistory: true))
    }

    func deleteSegment(_ context: AssentRequestContext) async throws -> APIResponse {
        let segment = try await ledger.existingSegment(segmentID(context))
        try await ledger.deleteSegment(id: segment.id)
        try await ledger.audit(nil, "segment_delete", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "segment:\(segment.id)",
                               ipAddress: context.remoteIP)
        return try APIResponse(json: SegmentJSON(segment, sizes: [], includeHistory: false))
    }

    /// Counts the segment now and records it as today's size.
    func measureSegment(_ context: AssentRequestContext) async throws -> APIResponse {
        let segment = try await ledger.existingSegment(segmentID(context))
        do {
            let size = try await ledger.measureSegment(segment)
            try await ledger.audit(nil, "segment_measure", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "segment:\(segment.id)",
                                   detail: "\(size.size)", ipAddress: context.remoteIP)
            return try APIResponse(json: SegmentSizeJSON(size))
        } catch DomainError.invalid(let errors) {
            throw APIError(.conflict, detail: "the segment's definition no longer holds: " + errors.map(\.description).joined(separator: "; "))
        }
    }

    func segmentAudience(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let segment = try await ledger.existingSegment(segmentID(context))
        let q = try Query(request)
        let format = q.string("format") ?? "csv"
        guard ["csv", "ndjson"].contains(format) else { throw APIError.badRequest(field: "format", "must be csv or ndjson") }
        do {
            return try await audienceResponse(segment.query, format: format, countOnly: try q.bool("count") == true, name: segment.id)
        } catch let error as APIError where error.status == .unprocessableContent {
            throw APIError(.conflict, detail: "the segment's definition no longer holds (a topic was retired?); edit it", errors: error.errors)
        }
    }
}
