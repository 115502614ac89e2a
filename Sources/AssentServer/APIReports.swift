import AssentCore
import AssentStore
import Foundation
import Hummingbird

extension API {
    var reportRoutes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/api/v1/reports/states", scope: .read) { r, _ in try await stateReport(r) },
            APIRoute(method: .get, path: "/api/v1/reports/changes", scope: .read) { r, _ in try await changeReport(r) },
            APIRoute(method: .get, path: "/api/v1/reports/double-opt-in", scope: .read) { r, _ in try await funnelReport(r) },
            APIRoute(method: .get, path: "/api/v1/reports/expiring", scope: .read) { r, _ in try await expiringReport(r) },
        ]
    }

    /// `format=json` (default) or `csv`.
    func reportFormat(_ q: Query) throws -> String {
        let format = q.string("format") ?? "json"
        guard ["json", "csv"].contains(format) else { throw APIError.badRequest(field: "format", "must be json or csv") }
        return format
    }

    /// The period of a report: `from` and `to` (dates or date-times); by default the last 12 weeks.
    static func period(_ q: Query, now: Date) throws -> (from: Date, to: Date) {
        // A date alone means "through that day".
        let to = try q.date("to").map { q.string("to")?.count == 10 ? $0.addingTimeInterval(86_400) : $0 } ?? now
        let from = try q.date("from") ?? Ledger.weekStart(to).addingTimeInterval(-11 * 7 * 86_400)
        guard from < to else { throw APIError.invalid(field: "from", "must be before 'to'") }
        guard to.timeIntervalSince(from) <= 3 * 366 * 86_400 else { throw APIError.invalid(field: "to", "a report covers at most three years") }
        return (from, to)
    }

    func csvResponse(_ table: (header: [String], rows: [[String]]), name: String) -> APIResponse {
        var response = APIResponse(status: .ok, body: Data(ReportViews.csv(table.header, table.rows).utf8), contentType: "text/csv; charset=utf-8")
        response.headers[.contentDisposition] = "attachment; filename=\"\(name).csv\""
        return response
    }

    func stateReport(_ request: Request) async throws -> APIResponse {
        let format = try reportFormat(try Query(request))
        let rows = try await ledger.stateReport()
        if format == "csv" { return csvResponse(ReportViews.statesTable(rows), name: "states") }
        let topics = ReportViews.orderedTopics(rows.map(\.topicKey))
        return try APIResponse(json: ListJSON(items: topics.map { topic in
            StateRowJSON(topic: topic, counts: Dictionary(uniqueKeysWithValues: rows.filter { $0.topicKey == topic }.map { ($0.state.rawValue, $0.count) }))
        }))
    }

    func changeReport(_ request: Request) async throws -> APIResponse {
        let q = try Query(request)
        let format = try reportFormat(q)
        let (from, to) = try Self.period(q, now: ledger.environment.now())
        let rows = try await ledger.changeReport(from: from, to: to)
        if format == "csv" { return csvResponse(ReportViews.changesTable(rows), name: "changes") }
        return try APIResponse(json: ChangeReportJSON(from: from, to: to, items: rows.map {
            .init(week: ReportViews.day($0.week), source: $0.source.rawValue, optIns: $0.optIns, optOuts: $0.optOuts)
        }))
    }

    func funnelReport(_ request: Request) async throws -> APIResponse {
        let q = try Query(request)
        let format = try reportFormat(q)
        let (from, to) = try Self.period(q, now: ledger.environment.now())
        let rows = try await ledger.funnelReport(from: from, to: to)
        if format == "csv" { return csvResponse(ReportViews.funnelTable(rows), name: "double-opt-in") }
        return try APIResponse(json: FunnelReportJSON(from: from, to: to, items: rows.map {
            .init(topic: $0.topicKey, requested: $0.requested, confirmed: $0.confirmed, confirmationRate: $0.confirmationRate,
                  medianSecondsToConfirm: $0.medianSecondsToConfirm, expiredUnconfirmed: $0.expiredUnconfirmed, open: $0.open)
        }))
    }

    func expiringReport(_ request: Request) async throws -> APIResponse {
        let format = try reportFormat(try Query(request))
        let rows = try await ledger.expiringReport()
        if format == "csv" { return csvResponse(ReportViews.expiringTable(rows), name: "expiring") }
        return try APIResponse(json: ListJSON(items: rows.map { ExpiringJSON(topic: $0.topicKey, within30Days: $0.within30, within60Days: $0.within60, within90Days: $0.within90) }))
    }
}

struct StateRowJSON: Encodable {
    var topic: String
    var counts: [String: Int]
}

struct ChangeReportJSON: Encodable {
    struct Item: Encodable {
        var week: String
        var source: String
        var optIns: Int
        var optOuts: Int
    }

    var from: Date
    var to: Date
    var items: [Item]
}

struct FunnelReportJSON: Encodable {
    struct Item: Encodable {
        /// nil: every topic together.
        var topic: String?
        var requested: Int
        var confirmed: Int
        var confirmationRate: Double
        var medianSecondsToConfirm: Double?
        var expiredUnconfirmed: Int
        var open: Int

        enum CodingKeys: String, CodingKey { case topic, requested, confirmed, confirmationRate, medianSecondsToConfirm, expiredUnconfirmed, open }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(topic, forKey: .topic)
            try c.encode(requested, forKey: .requested)
            try c.encode(confirmed, forKey: .confirmed)
            try c.encode(confirmationRate, forKey: .confirmationRate)
            try c.encode(medianSecondsToConfirm, forKey: .medianSecondsToConfirm)
            try c.encode(expiredUnconfirmed, forKey: .expiredUnconfirmed)
            try c.encode(open, forKey: .open)
        }
    }

    var from: Date
    var to: Date
    var items: [Item]
}

struct ExpiringJSON: Encodable {
    var topic: String
    var within30Days: Int
    var within60Days: Int
    var within90Days: Int
}
