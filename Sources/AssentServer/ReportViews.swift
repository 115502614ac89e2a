import AssentCore
import AssentStore
import Foundation

/// The four reports as tables (CSV and JSON share them) and charts.
enum ReportViews {
    static let stateOrder: [PreferenceState] = [.granted, .pending, .withdrawn, .expired, .none]

    static func day(_ date: Date) -> String {
        UTCTime.day(date)
    }

    /// RFC 4180 lines with a header.
    static func csv(_ header: [String], _ rows: [[String]]) -> String {
        ([header] + rows).map { $0.map(AudienceRows.csv).joined(separator: ",") }.joined(separator: "\r\n") + "\r\n"
    }

    static func statesTable(_ rows: [StateCount]) -> (header: [String], rows: [[String]]) {
        let topics = orderedTopics(rows.map(\.topicKey))
        return (["topic"] + stateOrder.map(\.rawValue), topics.map { topic in
            [topic] + stateOrder.map { state in String(rows.first { $0.topicKey == topic && $0.state == state }?.count ?? 0) }
        })
    }

    static func changesTable(_ rows: [ChangeCount]) -> (header: [String], rows: [[String]]) {
        (["week", "source", "opt_ins", "opt_outs"], rows.map { [day($0.week), $0.source.rawValue, String($0.optIns), String($0.optOuts)] })
    }

    static func funnelTable(_ rows: [FunnelRow]) -> (header: [String], rows: [[String]]) {
        (["topic", "requested", "confirmed", "confirmation_rate", "median_hours_to_confirm", "expired_unconfirmed", "open"], rows.map { r in
            [r.topicKey ?? "all", String(r.requested), String(r.confirmed), String(format: "%.3f", r.confirmationRate),
             r.medianSecondsToConfirm.map { String(format: "%.2f", $0 / 3_600) } ?? "", String(r.expiredUnconfirmed), String(r.open)]
        })
    }

    static func expiringTable(_ rows: [ExpiringCount]) -> (header: [String], rows: [[String]]) {
        (["topic", "within_30_days", "within_60_days", "within_90_days"], rows.map { [$0.topicKey, String($0.within30), String($0.within60), String($0.within90)] })
    }

    static func orderedTopics(_ keys: [String]) -> [String] {
        var seen: [String] = []
        for key in keys where !seen.contains(key) { seen.append(key) }
        return seen
    }

    /// Weeks from `from` to `to`, each with the opt-ins and opt-outs of every source summed.
    static func weekly(_ rows: [ChangeCount], from: Date, to: Date) -> [(week: Date, optIns: Int, optOuts: Int)] {
        var weeks: [(Date, Int, Int)] = []
        var week = Ledger.weekStart(from)
        while week < to {
            let mine = rows.filter { $0.week == week }
            weeks.append((week, mine.map(\.optIns).reduce(0, +), mine.map(\.optOuts).reduce(0, +)))
            week = week.addingTimeInterval(7 * 86_400)
        }
        return weeks
    }
}
