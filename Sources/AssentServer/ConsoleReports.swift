import AssentCore
import AssentStore
import Foundation
import HTTPTypes
import Hummingbird

/// The reports page: four charts drawn on the server as SVG, each with a
/// text summary, its numbers in a table and a CSV download.
extension ConsolePages {
    var reportRoutes: [ConsoleRoute] {
        [
            ConsoleRoute(method: .get, path: "/console/reports", roles: Self.everyone) { r, _, v in try await reports(r, v!) },
            ConsoleRoute(method: .get, path: "/console/reports/{name}", roles: Self.everyone) { r, c, v in try await reportCSV(r, c, v!) },
        ]
    }

    func reportPeriod(_ request: Request) throws -> (from: Date, to: Date) {
        try API.period(try Query(request), now: ledger.environment.now())
    }

    func reports(_ request: Request, _ visit: ConsoleVisit) async throws -> Response {
        let from: Date, to: Date
        do { (from, to) = try reportPeriod(request) } catch let error as APIError {
            return render("console-message", title: "Reports", visit: visit, nav: "Reports", status: .badRequest,
                          model: ["paragraphs": [error.detail], "back": ["href": "/console/reports", "text": "Back to the reports"]])
        }
        let states = try await ledger.stateReport()
        let changes = try await ledger.changeReport(from: from, to: to)
        let funnel = try await ledger.funnelReport(from: from, to: to)
        let expiring = try await ledger.expiringReport()
        // The form shows the last day included; a date alone means through that day.
        let lastDay = to.addingTimeInterval(-0.001)
        let period = "from=\(ReportViews.day(from))&to=\(ReportViews.day(lastDay))"

        // 1. States per topic.
        let statesTable = ReportViews.statesTable(states)
        let topics = statesTable.rows.map { $0[0] }
        let stateSeries = ReportViews.stateOrder.enumerated().map { i, state in
            GroupedBarChart.Series(name: state.rawValue, colour: GroupedBarChart.palette[i],
                                   values: topics.map { t in states.first { $0.topicKey == t && $0.state == state }?.count ?? 0 })
        }
        let granted = topics.map { t in "\(t) \(states.first { $0.topicKey == t && $0.state == .granted }?.count ?? 0)" }.joined(separator: ", ")
        let statesChart = GroupedBarChart.svg(categories: topics, series: stateSeries, id: "report-states", title: "Contacts per topic by state, today",
                                              summary: topics.isEmpty ? "No topics yet." : "Granted per topic: \(granted).")

        // 2. Opt-ins and opt-outs per week.
        let weeks = ReportViews.weekly(changes, from: from, to: to)
        let totalIn = weeks.map(\.optIns).reduce(0, +), totalOut = weeks.map(\.optOuts).reduce(0, +)
        let changesChart = GroupedBarChart.svg(
            categories: weeks.map { ReportViews.day($0.week) },
            series: [.init(name: "opt-ins", colour: GroupedBarChart.palette[2], values: weeks.map(\.optIns)),
                     .init(name: "opt-outs", colour: GroupedBarChart.palette[5], values: weeks.map(\.optOuts))],
            id: "report-changes", title: "Opt-ins and opt-outs per week",
            summary: "\(totalIn) opt-ins and \(totalOut) opt-outs in \(weeks.count) weeks from \(ReportViews.day(from)).")

        // 3. The double opt-in funnel.
        let all = funnel.last ?? FunnelRow(topicKey: nil, requested: 0, confirmed: 0, expiredUnconfirmed: 0, open: 0, medianSecondsToConfirm: nil)
        let median = all.medianSecondsToConfirm.map { Self.duration($0) } ?? "no confirmations"
        let funnelChart = BarChart.svg([.init(label: "requested", value: all.requested), .init(label: "confirmed", value: all.confirmed),
                                        .init(label: "expired unconfirmed", value: all.expiredUnconfirmed), .init(label: "open", value: all.open)],
                                       id: "report-funnel", title: "Double opt-in: requested, confirmed, expired unconfirmed, still open",
                                       summary: "\(all.requested) requested, \(all.confirmed) confirmed (\(Int((all.confirmationRate * 100).rounded())) %), "
                                           + "\(all.expiredUnconfirmed) expired unconfirmed, \(all.open) still open; median time to confirm: \(median).")

        // 4. Expiring soon.
        let expiringChart = GroupedBarChart.svg(
            categories: expiring.map(\.topicKey),
            series: [.init(name: "30 days", colour: GroupedBarChart.palette[5], values: expiring.map(\.within30)),
                     .init(name: "60 days", colour: GroupedBarChart.palette[1], values: expiring.map(\.within60)),
                     .init(name: "90 days", colour: GroupedBarChart.palette[4], values: expiring.map(\.within90))],
            id: "report-expiring", title: "Consents expiring within 30, 60 and 90 days",
            summary: expiring.isEmpty ? "No consent expires in the next 90 days."
                : expiring.map { "\($0.topicKey): \($0.within30) within 30 days, \($0.within90) within 90" }.joined(separator: "; ") + ".")

        func table(_ t: (header: [String], rows: [[String]])) -> [String: Any] {
            ["header": t.header, "rows": t.rows.map { ["cells": $0] }]
        }
        return render("console-reports", title: "Reports", visit: visit, nav: "Reports", model: [
            "from": ReportViews.day(from), "to": ReportViews.day(lastDay), "period": period,
            "statesChart": statesChart, "statesTable": table(statesTable),
            "changesChart": changesChart, "changesTable": table(ReportViews.changesTable(changes)), "hasChanges": !changes.isEmpty,
            "funnelChart": funnelChart, "funnelTable": table(ReportViews.funnelTable(funnel)),
            "expiringChart": expiringChart, "expiringTable": table(ReportViews.expiringTable(expiring)), "hasExpiring": !expiring.isEmpty,
        ])
    }

    static func duration(_ seconds: Double) -> String {
        if seconds < 90 { return "\(Int(seconds.rounded())) seconds" }
        if seconds < 5_400 { return "\(Int((seconds / 60).rounded())) minutes" }
        if seconds < 172_800 { return String(format: "%.1f hours", seconds / 3_600) }
        return String(format: "%.1f days", seconds / 86_400)
    }

    /// The numbers behind a chart, as CSV (`states.csv`, `changes.csv`, `double-opt-in.csv`, `expiring.csv`).
    func reportCSV(_ request: Request, _ context: AssentRequestContext, _ visit: ConsoleVisit) async throws -> Response {
        let name = try context.parameters.require("name")
        let table: (header: [String], rows: [[String]])
        switch name {
        case "states.csv": table = ReportViews.statesTable(try await ledger.stateReport())
        case "expiring.csv": table = ReportViews.expiringTable(try await ledger.expiringReport())
        case "changes.csv", "double-opt-in.csv":
            let from: Date, to: Date
            do { (from, to) = try reportPeriod(request) } catch let error as APIError { throw DomainError.invalid(field: "period", error.detail) }
            table = name == "changes.csv" ? ReportViews.changesTable(try await ledger.changeReport(from: from, to: to))
                : ReportViews.funnelTable(try await ledger.funnelReport(from: from, to: to))
        default:
            throw DomainError.notFound(what: "report", id: String(name.prefix(40)))
        }
        var headers = PageHeaders.html()
        headers[.contentType] = "text/csv; charset=utf-8"
        headers[.contentDisposition] = "attachment; filename=\"\(name)\""
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: ReportViews.csv(table.header, table.rows))))
    }
}
