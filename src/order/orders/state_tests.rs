//! Every pair of every status, legal or not, against a matrix written out here by hand: a change to
//! a transition table that this file does not repeat fails the suite.

use super::*;

/// Checks all `ALL × ALL` pairs of `S`: exactly the `legal` ones (and staying put) are allowed,
/// every other one is an [`IllegalTransition`] naming both statuses.
fn check_matrix<S: Status>(legal: &[&str]) {
    let mut seen = 0;
    for &from in S::ALL {
        for &to in S::ALL {
            let pair = format!("{} -> {}", from.as_str(), to.as_str());
            let expected = from == to || legal.contains(&pair.as_str());
            match from.transition(to) {
                Ok(status) => {
                    assert!(expected, "{} {pair} must be illegal", S::ENTITY);
                    assert_eq!(status, to);
                }
                Err(e) => {
                    assert!(!expected, "{} {pair} must be legal", S::ENTITY);
                    assert_eq!(
                        e.to_string(),
                        format!(
                            "Cannot move {} from {} to {}",
                            S::ENTITY,
                            from.as_str(),
                            to.as_str()
                        )
                    );
                }
            }
            seen += 1;
        }
    }
    assert_eq!(seen, S::ALL.len() * S::ALL.len());
    for pair in legal {
        let (from, to) = pair.split_once(" -> ").unwrap();
        assert!(S::parse(from).is_some() && S::parse(to).is_some(), "{pair}");
    }
}

#[test]
fn order_transitions_are_exactly_the_table() {
    check_matrix::<OrderStatus>(&[
        "PENDING -> PROCESSING",
        "PENDING -> READY_FOR_FULFILLMENT",
        "PENDING -> FAILED",
        "PENDING -> CANCELLED",
        "PROCESSING -> READY_FOR_FULFILLMENT",
        "PROCESSING -> PARTIALLY_COMPLETED",
        "PROCESSING -> FAILED",
        "PROCESSING -> CANCELLED",
        "PROCESSING -> PENDING",
        "PARTIALLY_COMPLETED -> PROCESSING",
        "PARTIALLY_COMPLETED -> CANCELLED",
        "PARTIALLY_COMPLETED -> READY_FOR_FULFILLMENT",
        "FAILED -> PROCESSING",
        "FAILED -> CANCELLED",
        "FAILED -> READY_FOR_FULFILLMENT",
        "READY_FOR_FULFILLMENT -> SHIPPED",
        "READY_FOR_FULFILLMENT -> CANCELLED",
        "SHIPPED -> FULFILLED",
        "CANCELLED -> PROCESSING",
    ]);
}

#[test]
fn line_item_transitions_are_exactly_the_table() {
    check_matrix::<LineItemStatus>(&[
        "PENDING -> UNMAPPED",
        "PENDING -> PRINTING",
        "PENDING -> COMPLETED",
        "PENDING -> FAILED",
        "PENDING -> CANCELLED",
        "UNMAPPED -> PENDING",
        "UNMAPPED -> CANCELLED",
        "PRINTING -> PENDING",
        "PRINTING -> COMPLETED",
        "PRINTING -> FAILED",
        "PRINTING -> CANCELLED",
        "FAILED -> PENDING",
        "FAILED -> PRINTING",
        "FAILED -> COMPLETED",
        "FAILED -> CANCELLED",
        "CANCELLED -> PENDING",
        "CANCELLED -> PRINTING",
        "CANCELLED -> COMPLETED",
    ]);
}

#[test]
fn print_job_transitions_are_exactly_the_table() {
    check_matrix::<PrintJobStatus>(&[
        "QUEUED -> PRINTING",
        "QUEUED -> COMPLETED",
        "QUEUED -> FAILED",
        "QUEUED -> CANCELLED",
        "PRINTING -> COMPLETED",
        "PRINTING -> FAILED",
        "PRINTING -> CANCELLED",
        "FAILED -> QUEUED",
        "FAILED -> CANCELLED",
        "CANCELLED -> QUEUED",
    ]);
}

#[test]
fn an_illegal_transition_is_a_409_in_the_error_shape() {
    let error: ApiError = OrderStatus::Shipped
        .transition(OrderStatus::Cancelled)
        .unwrap_err()
        .into();
    assert_eq!(error.status(), 409);
    let body = serde_json::to_value(error.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"statusCode": 409, "message": "Cannot move order from SHIPPED to CANCELLED", "error": "Conflict"})
    );
}

#[test]
fn statuses_serialize_as_the_spec_writes_them() {
    assert_eq!(
        serde_json::to_value(OrderStatus::ReadyForFulfillment).unwrap(),
        "READY_FOR_FULFILLMENT"
    );
    assert_eq!(
        serde_json::to_value(LineItemStatus::Unmapped).unwrap(),
        "UNMAPPED"
    );
    for status in OrderStatus::ALL {
        let json = serde_json::to_value(status).unwrap();
        assert_eq!(json, status.as_str());
        assert_eq!(OrderStatus::parse(status.as_str()), Some(*status));
    }
}

#[test]
fn a_line_items_status_follows_its_jobs() {
    use LineItemStatus as L;
    use PrintJobStatus::*;
    let cases: &[(L, bool, &[PrintJobStatus], L)] = &[
        (L::Pending, true, &[], L::Pending),
        (L::Pending, false, &[], L::Unmapped),
        (L::Unmapped, true, &[], L::Pending),
        (L::Completed, true, &[], L::Completed),
        (L::Failed, true, &[], L::Failed),
        (L::Pending, true, &[Queued, Queued], L::Pending),
        (L::Pending, true, &[Queued, Printing], L::Printing),
        (L::Pending, true, &[Completed, Queued], L::Printing),
        (L::Printing, true, &[Completed, Completed], L::Completed),
        (L::Printing, true, &[Completed, Failed], L::Failed),
        (L::Printing, true, &[Completed, Cancelled], L::Failed),
        (L::Printing, true, &[Failed, Queued], L::Pending),
        (L::Pending, true, &[Cancelled, Cancelled], L::Cancelled),
        (L::Failed, true, &[Queued, Completed], L::Printing),
    ];
    for (current, mapped, jobs, expected) in cases {
        assert_eq!(
            line_item_status(*current, *mapped, jobs),
            *expected,
            "{current:?}, mapped {mapped}, jobs {jobs:?}"
        );
    }
}

#[test]
fn an_orders_status_follows_its_line_items() {
    use LineItemStatus as L;
    use OrderStatus as O;
    let cases: &[(O, &[L], bool, O)] = &[
        (
            O::Processing,
            &[L::Pending, L::Printing],
            false,
            O::Processing,
        ),
        (
            O::Processing,
            &[L::Completed, L::Completed],
            false,
            O::ReadyForFulfillment,
        ),
        (
            O::Processing,
            &[L::Completed, L::Failed],
            false,
            O::PartiallyCompleted,
        ),
        (O::Processing, &[L::Failed, L::Failed], false, O::Failed),
        (O::Processing, &[L::Failed, L::Cancelled], false, O::Failed),
        (
            O::Processing,
            &[L::Completed, L::Unmapped],
            false,
            O::PartiallyCompleted,
        ),
        (O::Pending, &[L::Unmapped, L::Unmapped], false, O::Pending),
        (
            O::PartiallyCompleted,
            &[L::Completed, L::Pending],
            false,
            O::Processing,
        ),
        (O::Failed, &[L::Pending], false, O::Processing),
        // Cancelled orders keep still until a job is revived.
        (O::Cancelled, &[L::Pending], false, O::Cancelled),
        (O::Cancelled, &[L::Pending], true, O::Processing),
        // Shipped and fulfilled orders do not follow their jobs at all.
        (O::Shipped, &[L::Failed], true, O::Shipped),
        (O::Fulfilled, &[L::Pending], false, O::Fulfilled),
        (O::Processing, &[], false, O::Processing),
    ];
    for (current, items, revived, expected) in cases {
        let derived = order_status(*current, items, *revived);
        assert_eq!(
            derived, *expected,
            "{current:?} {items:?} revived {revived}"
        );
        assert!(
            current.can_become(derived),
            "the derivation only makes legal moves: {current:?} -> {derived:?}"
        );
    }
}

#[test]
fn revival_is_a_terminal_job_becoming_active_again() {
    use PrintJobStatus::*;
    assert!(PrintJobStatus::is_revival(Cancelled, Queued));
    assert!(PrintJobStatus::is_revival(Failed, Queued));
    assert!(!PrintJobStatus::is_revival(Queued, Printing));
    assert!(!PrintJobStatus::is_revival(Completed, Queued));
}
