//! Whole checkouts, given a world, when things happen, then where every service ends: each
//! scenario runs every service's rules together (no database, no Kafka), and ends with the
//! invariant checker's rules and the saga's progress checked against what happened.

use bazaar_saga::sim::{Action, Card, Fault, Fifo, Script, Service, Sim, World, world};
use events::EventType::{self, *};
use notification_rules::Kind;
use order_rules::{OrderStatus, reasons};
use shipping_rules::ShipmentStatus;

/// given a world, when its customers act, then what every service holds.
struct Scenario {
    sim: Sim,
}

fn given(world: World) -> Scenario {
    Scenario {
        sim: Sim::new(world),
    }
}

fn one_checkout(stock: i64, script: Script) -> World {
    world(&[("TEE", stock)], 1, vec![script])
}

impl Scenario {
    /// Customers register and check out, and the saga runs until nothing is left to do.
    fn when_everything_settles(mut self) -> Self {
        self.sim.settle(&mut Fifo, 10_000);
        self
    }

    /// Customers register and check out, and the saga runs until `done`.
    fn when_it_runs_until(mut self, done: impl Fn(&Sim, &str) -> bool) -> Self {
        for customer in 0..8 {
            self.sim.register(customer);
        }
        let order = self.sim.place(0).expect("a valid checkout");
        self.sim.run_until(|sim| done(sim, &order));
        self
    }

    fn and(mut self, action: impl FnOnce(&str) -> Action) -> Self {
        let order = self.order();
        self.sim.act(action(&order));
        self
    }

    fn order(&self) -> String {
        self.sim.order_id(0).expect("placed").to_owned()
    }

    fn then_order(self, status: OrderStatus, reason: Option<&str>) -> Self {
        let state = self.sim.order(&self.order()).expect("an order");
        assert_eq!(state.status(), status);
        assert_eq!(state.reason.as_deref(), reason);
        self
    }

    /// The event types published for the order, in order.
    fn then_published(self, expected: &[EventType]) -> Self {
        assert_eq!(self.sim.events_of(&self.order()), expected);
        self
    }

    fn then_never_published(self, absent: &[EventType]) -> Self {
        let published = self.sim.events_of(&self.order());
        for event in absent {
            assert!(!published.contains(event), "{event} in {published:?}");
        }
        self
    }

    fn then_stock(self, on_hand: i64, reserved: i64) -> Self {
        let level = self.sim.stock("TEE").expect("stocked");
        assert_eq!((level.on_hand, level.reserved), (on_hand, reserved));
        self
    }

    fn then_charged(self, times: usize, refunded: bool) -> Self {
        let order = self.order();
        assert_eq!(self.sim.charges(&order), times);
        assert_eq!(self.sim.order(&order).expect("order").refunded, refunded);
        self
    }

    fn then_notified(self, kinds: &[Kind]) -> Self {
        assert_eq!(self.sim.notices(&self.order()), kinds);
        self
    }

    /// Every promise the invariant checker knows holds, and the saga's progress said at every
    /// step who would act next.
    fn then_every_promise_holds(self) -> Self {
        assert_eq!(self.sim.failures(), &[] as &[String]);
        assert_eq!(self.sim.evaluate().violations, vec![]);
        assert_eq!(self.sim.progress_errors(), Vec::<String>::new());
        self
    }
}

#[test]
fn happy_path_the_order_is_paid_charged_once_shipped_and_delivered() {
    given(one_checkout(5, Script::buying(&[("TEE", 2)])))
        .when_everything_settles()
        .then_order(OrderStatus::Delivered, None)
        .then_published(&[
            OrderCreated,
            StockReserved,
            PaymentSucceeded,
            StockCommitted,
            OrderPaid,
            ShipmentScheduled,
            ShipmentDispatched,
            ShipmentDelivered,
        ])
        .then_stock(3, 0)
        .then_charged(1, false)
        .then_notified(&[
            Kind::OrderPaid,
            Kind::ShipmentScheduled,
            Kind::ShipmentDispatched,
            Kind::ShipmentDelivered,
        ])
        .then_every_promise_holds();
}

#[test]
fn out_of_stock_the_order_is_rejected_naming_the_sku_and_nothing_is_charged() {
    let scenario = given(one_checkout(1, Script::buying(&[("TEE", 2)])))
        .when_everything_settles()
        .then_order(OrderStatus::Rejected, Some(reasons::OUT_OF_STOCK))
        .then_published(&[OrderCreated, StockReservationFailed, OrderRejected])
        .then_stock(1, 0)
        .then_charged(0, false)
        .then_notified(&[Kind::OrderRejected])
        .then_every_promise_holds();
    let order = scenario.order();
    let state = scenario.sim.order(&order).expect("order");
    assert_eq!(state.rejected_sku.as_deref(), Some("TEE"));
}

#[test]
fn decline_the_order_is_cancelled_and_its_stock_released() {
    let mut declined = Script::buying(&[("TEE", 2)]);
    declined.card = Card::Declined;
    given(one_checkout(5, declined))
        .when_everything_settles()
        .then_order(OrderStatus::Cancelled, Some(reasons::PAYMENT_DECLINED))
        .then_published(&[
            OrderCreated,
            StockReserved,
            PaymentFailed,
            OrderCancelled,
            StockReleased,
        ])
        .then_stock(5, 0)
        .then_charged(0, false)
        .then_notified(&[Kind::OrderCancelled])
        .then_every_promise_holds();
}

#[test]
fn late_payment_after_expiry_the_order_is_cancelled_and_the_late_charge_refunded() {
    let mut slow = Script::buying(&[("TEE", 2)]);
    slow.expiry = true;
    given(one_checkout(5, slow))
        .when_it_runs_until(|sim, order| sim.charge_in_flight(order))
        .and(|order| Action::Expire(order.to_owned()))
        .when_everything_settles()
        .then_order(OrderStatus::Cancelled, Some(reasons::TIMEOUT))
        .then_published(&[
            OrderCreated,
            StockReserved,
            ReservationExpired,
            OrderCancelled,
            PaymentSucceeded,
            PaymentRefunded,
        ])
        .then_never_published(&[StockCommitted, OrderPaid])
        .then_stock(5, 0)
        .then_charged(1, true)
        .then_notified(&[Kind::OrderCancelled, Kind::PaymentRefunded])
        .then_every_promise_holds();
}

#[test]
fn cancel_mid_charge_the_charge_lands_and_is_refunded() {
    let mut cancelling = Script::buying(&[("TEE", 2)]);
    cancelling.cancel = true;
    given(one_checkout(5, cancelling))
        .when_it_runs_until(|sim, order| sim.charge_in_flight(order))
        .and(|order| Action::Cancel(order.to_owned()))
        .when_everything_settles()
        .then_order(OrderStatus::Cancelled, Some(reasons::CUSTOMER_REQUEST))
        .then_published(&[
            OrderCreated,
            StockReserved,
            OrderCancelled,
            StockReleased,
            PaymentSucceeded,
            PaymentRefunded,
        ])
        .then_never_published(&[OrderPaid])
        .then_stock(5, 0)
        .then_charged(1, true)
        .then_notified(&[Kind::OrderCancelled, Kind::PaymentRefunded])
        .then_every_promise_holds();
}

#[test]
fn deadline_with_a_lost_answer_the_unknown_charge_is_resolved_then_refunded() {
    let mut lost = Script::buying(&[("TEE", 1)]);
    lost.faults = vec![Fault::AnswerLost];
    lost.deadline = true;
    given(one_checkout(5, lost))
        .when_it_runs_until(|sim, order| {
            sim.payment(order).is_some_and(|payment| payment.attempted)
                && !sim.charge_in_flight(order)
        })
        .and(|order| Action::Deadline(order.to_owned()))
        .when_everything_settles()
        .then_order(OrderStatus::Cancelled, Some(reasons::TIMEOUT))
        .then_stock(5, 0)
        .then_charged(1, true)
        .then_notified(&[Kind::OrderCancelled, Kind::PaymentRefunded])
        .then_every_promise_holds();
}

#[test]
fn the_last_unit_goes_to_one_of_two_customers() {
    let mut second = Script::buying(&[("TEE", 1)]);
    second.customer = 1;
    let mut sim = Sim::new(world(
        &[("TEE", 1)],
        2,
        vec![Script::buying(&[("TEE", 1)]), second],
    ));
    sim.settle(&mut Fifo, 10_000);
    let statuses: Vec<OrderStatus> = (0..2)
        .map(|index| {
            let order = sim.order_id(index).expect("placed");
            sim.order(order).expect("order").status()
        })
        .collect();
    assert_eq!(statuses, [OrderStatus::Delivered, OrderStatus::Rejected]);
    assert_eq!(
        sim.stock("TEE").map(|l| (l.on_hand, l.reserved)),
        Some((0, 0))
    );
    assert_eq!(sim.evaluate().violations, vec![]);
    assert_eq!(sim.progress_errors(), Vec::<String>::new());
}

#[test]
fn notices_wait_for_a_customer_who_registers_late() {
    let mut sim = Sim::new(one_checkout(5, Script::buying(&[("TEE", 1)])));
    let order = sim.place(0).expect("placed");
    sim.run_until(|_| false);
    assert_eq!(
        sim.shipment(&order),
        Some(ShipmentStatus::Delivered),
        "the saga does not wait for the address"
    );
    assert!(
        !sim.evaluate().violations.is_empty(),
        "e-mails are still unsent"
    );
    sim.register(0);
    sim.settle(&mut Fifo, 10_000);
    assert_eq!(sim.evaluate().violations, vec![]);
}

/// Everything a set of scenarios publishes: every event type of the saga.
fn samples() -> Vec<events::Event> {
    let mut declined = Script::buying(&[("TEE", 1)]);
    declined.card = Card::Declined;
    let mut expired = Script::buying(&[("TEE", 1)]);
    expired.expiry = true;
    let mut settled = Sim::new(world(
        &[("TEE", 3)],
        1,
        vec![
            Script::buying(&[("TEE", 1)]),
            Script::buying(&[("TEE", 9)]),
            declined,
        ],
    ));
    settled.settle(&mut Fifo, 10_000);
    let refunded = given(one_checkout(5, expired))
        .when_it_runs_until(|sim, order| sim.charge_in_flight(order))
        .and(|order| Action::Expire(order.to_owned()))
        .when_everything_settles();
    let mut samples: Vec<events::Event> = settled
        .log()
        .iter()
        .chain(refunded.sim.log())
        .map(|m| m.event.clone())
        .collect();
    samples.push(
        events::ProductSnapshot {
            product_id: "p".into(),
            slug: "tee".into(),
            name: "Tee".into(),
            description: String::new(),
            archived: false,
            variants: Vec::new(),
        }
        .into(),
    );
    samples
}

#[test]
fn each_service_consumes_and_handles_exactly_what_its_rules_react_on() {
    let samples = samples();
    for service in Service::ALL {
        for event in &samples {
            assert_eq!(
                service.reacts_to(event),
                service.handles(event),
                "{} on {}: its rules' inputs and its HANDLES disagree",
                service.name(),
                event.type_name()
            );
            if service.reacts_to(event) {
                assert!(
                    service.subscriptions().contains(&event.topic()),
                    "{} reacts to {} but does not consume {}",
                    service.name(),
                    event.type_name(),
                    event.topic()
                );
            }
        }
        for topic in service.subscriptions() {
            assert!(
                samples
                    .iter()
                    .any(|event| event.topic() == *topic && service.reacts_to(event)),
                "{} consumes {topic} but reacts to nothing on it",
                service.name()
            );
        }
    }
}
