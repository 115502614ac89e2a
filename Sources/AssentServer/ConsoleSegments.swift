import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// Console pages for segments: the list with each one's latest size, a form
/// to save one, and a segment's page with its size over time as a chart (and
/// the numbers as a table), edit, measure, export and delete.
extension ConsolePages {
    var segmentRoutes: [ConsoleRoute] {
        [
            ConsoleRoute(method: .get, path: "/console/segments", roles: Self.everyone) { _, _, v in try await segments(v!) },
            ConsoleRoute(method: .post, path: "/console/segments", roles: Self.recorders) { _, c, v in try await createSegment(c, v!) },
            ConsoleRoute(method: .get, path: "/console/segments/{id}", roles: Self.everyone) { _, c, v in try await segment(c, v!) },
            ConsoleRoute(method: .post, path: "/console/segments/{id}", roles: Self.recorders) { _, c, v in try await editSegment(c, v!) },
            ConsoleRoute(method: .post, path: "/console/segments/{id}/measure", roles: Self.recorders) { _, c, v in try await measureSegment(c, v!) },
            ConsoleRoute(method: .post, path: "/console/segments/{id}/delete", roles: Self.admins) { _, c, v in try await deleteSegment(c, v!) },
            // Rows carry each person's links, which act as them: admins only, and audited.
            ConsoleRoute(method: .get, path: "/console/segments/{id}/export.csv", roles: Self.admins) { _, c, v in try await exportSegment(c, v!) },
        ]
    }

    static func describe(_ q: AudienceQuery) -> String {
        var parts: [String] = []
        if !q.topics.isEmpty { parts.append((q.match == .all ? "granted all of " : "granted any of ") + q.topics.joined(separator: ", ")) }
        if !q.categories.isEmpty { parts.append("topics in " + q.categories.joined(separator: ", ")) }
        if let locale = q.locale { parts.append("language \(locale)") }
        if let since = q.createdSince { parts.append("added since \(since.isoDayText)") }
        if let since = q.changedSince { parts.append("granted since \(since.isoDayText)") }
        return parts.joined(separator: "; ")
    }

    /// The choices a segment form offers, with a definition's ticked.
    func definitionChoices(_ q: AudienceQuery?) async throws -> [String: Any] {
        let topics = try await ledger.store.topics(includeRetired: false)
        let categories = Array(Set(topics.map(\.category))).sorted()
        return [
            "topicChoices": topics.map { ["key": $0.key, "title": $0.title, "checked": q?.topics.contains($0.key) == true] },
            "categoryChoices": categories.enumerated().map { ["index": $0.offset, "name": $0.element, "checked": q?.categories.contains($0.element) == true] },
            "matchAll": q?.match == .all, "locale": q?.locale ?? "",
        ]
    }

    func segments(_ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok) async throws -> Response {
        var rows: [[String: Any]] = []
        for s in try await ledger.store.segments() {
            let sizes = try await ledger.store.segmentSizes(segmentID: s.id, limit: 30)
            rows.append(["id": s.id, "name": s.name, "definition": Self.describe(s.query),
                         "size": sizes.last.map { "\($0.size)" } ?? "not measured yet", "day": sizes.last?.day ?? ""])
        }
        var model = try await definitionChoices(nil)
        model["segments"] = rows
        model["hasSegments"] = !rows.isEmpty
        model["canRecord"] = Self.recorders.contains(visit.user.role)
        return render("console-segments", title: "Segments", visit: visit, nav: "Segments", status: status, model: model, errors: errors)
    }

    /// Reads the definition fields of a segment form.
    func definition(_ f: FormBody) -> AudienceQuery {
        AudienceQuery(topics: f.values("topic"), categories: f.values("category"), match: f.value("match") == "all" ? .all : .any,
                      locale: f.value("locale").flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) })
    }

    func createSegment(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let f = visit.form
        do {
            let segment = try await ledger.createSegment(id: f.value("id") ?? "", name: f.value("name") ?? "", description: f.value("description") ?? "",
                                                         query: definition(f), createdBy: visit.user.email.value)
            try await ledger.audit(visit.user, "segment_create", target: "segment:\(segment.id)", ipAddress: context.remoteIP)
            _ = try? await ledger.measureSegment(segment)
            return redirect("/console/segments/\(segment.id)")
        } catch DomainError.invalid(let errors) {
            return try await segments(visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    func segment(_ context: AssentRequestContext, _ visit: ConsoleVisit, errors: [String] = [], status: HTTPResponse.Status = .ok,
                 flash: String? = nil) async throws -> Response {
        let s = try await ledger.existingSegment(try context.parameters.require("id"))
        let sizes = try await ledger.store.segmentSizes(segmentID: s.id, limit: 90)
        var model = try await definitionChoices(s.query)
        model["segment"] = ["id": s.id, "name": s.name, "description": s.description, "definition": Self.describe(s.query),
                            "createdBy": s.createdBy, "createdAt": time(s.createdAt), "updatedAt": time(s.updatedAt)]
        model["hasSizes"] = !sizes.isEmpty
        model["sizes"] = sizes.reversed().map { ["day": $0.day, "size": $0.size, "measuredAt": time($0.measuredAt)] }
        if let first = sizes.first, let last = sizes.last {
            let summary = sizes.count == 1 ? "\(last.size) contacts on \(last.day)."
                : "From \(first.size) contacts on \(first.day) to \(last.size) on \(last.day); highest \(sizes.map(\.size).max() ?? 0)."
            model["chart"] = BarChart.svg(sizes.map { .init(label: $0.day, value: $0.size) }, id: "segment-size",
                                          title: "\(s.name): contacts who may be sent it, per day", summary: summary)
            model["summary"] = summary
        }
        model["canRecord"] = Self.recorders.contains(visit.user.role)
        return render("console-segment", title: s.name, visit: visit, nav: "Segments", status: status, model: model, flash: flash, errors: errors)
    }

    func editSegment(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        let f = visit.form
        do {
            _ = try await ledger.updateSegment(id: id) { s in
                if let name = f.value("name") { s.name = name }
                if let description = f.value("description") { s.description = description }
                // The form has no date filters: keep those set through the API or CLI.
                var query = definition(f)
                query.createdSince = s.query.createdSince
                query.changedSince = s.query.changedSince
                s.query = query
            }
            try await ledger.audit(visit.user, "segment_update", target: "segment:\(id)", ipAddress: context.remoteIP)
            return try await segment(context, visit, flash: "Saved.")
        } catch DomainError.invalid(let errors) {
            return try await segment(context, visit, errors: errors.map(\.description), status: .unprocessableContent)
        }
    }

    func measureSegment(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let s = try await ledger.existingSegment(try context.parameters.require("id"))
        do {
            let size = try await ledger.measureSegment(s)
            try await ledger.audit(visit.user, "segment_measure", target: "segment:\(s.id)", detail: "\(size.size)", ipAddress: context.remoteIP)
            return try await segment(context, visit, flash: "\(size.size) contacts may be sent it today.")
        } catch DomainError.invalid(let errors) {
            return try await segment(context, visit, errors: ["Its definition no longer holds; edit it."] + errors.map(\.description), status: .conflict)
        }
    }

    func deleteSegment(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let id = try context.parameters.require("id")
        try await ledger.deleteSegment(id: id)
        try await ledger.audit(visit.user, "segment_delete", target: "segment:\(id)", ipAddress: context.remoteIP)
        return redirect("/console/segments")
    }

    func exportSegment(_ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let s = try await ledger.existingSegment(try context.parameters.require("id"))
        let query: AudienceQuery
        do { query = try await ledger.validate(s.query) } catch DomainError.invalid(let errors) {
            return try await segment(context, visit, errors: ["Its definition no longer holds; edit it."] + errors.map(\.description), status: .conflict)
        }
        try await ledger.audit(visit.user, "segment_export", target: "segment:\(s.id)", ipAddress: context.remoteIP)
        let ledger = self.ledger, base = pages.site.baseURL
        var headers = PageHeaders.html()
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[.contentDisposition] = "attachment; filename=\"segment-\(s.id).csv\""
        return Response(status: .ok, headers: headers, body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: AudienceRows.csvHeader(query) + "\r\n"))
            try await AudienceRows.stream(query, ledger: ledger, base: base, format: "csv") { try await writer.write(ByteBuffer(bytes: $0)) }
            try await writer.finish(nil)
        })
    }
}

extension Date {
    var isoDayText: String {
        UTCTime.day(self)
    }
}
