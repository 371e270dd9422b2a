//! The whole checkout saga in memory: every service's rules crate, an in-memory bus with Kafka's
//! ordering, the services' workers and a scripted world.
//!
//! Each service keeps in memory what its database keeps, and handles an event as its consumer
//! does: the same rules crate decides, the simulator only stores. The bus keeps Kafka's one
//! promise the saga relies on, order per topic and key, and nothing more: any stream (topic,
//! key) of any consumer may be delivered next, so every interleaving across keys and topics is
//! possible, and a message may be delivered again later (at least once; the service's inbox
//! drops a copy it has handled, as `messaging_inbox` does). Workers (the payment provider calls,
//! the mail sender, reservation expiry, order deadlines) and the world (customers registering,
//! checking out and cancelling, the warehouse dispatching and delivering) are actions too.
//!
//! [`Sim::settle`] runs until nothing is left to do, choosing each action with a [`Chooser`]:
//! [`Fifo`] for scenarios that read as a story, [`Choices`] for property tests. After every
//! action the saga's [`progress`] of each order is recorded, and [`Sim::progress_errors`]
//! checks each against what the services did next.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bazaar_invariants::model::{
    InventoryDb, Ledger, LedgerCharge, LedgerRefund, Notification, Order, Payment, PaymentDb,
    Reservation, Shipment, Snapshot, Stock, Transaction,
};
use bazaar_invariants::rules::{Evaluation, Expectations, evaluate};
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use events::{Event, EventType, UserRegistered};
use inventory_rules::{
    InventoryInput, Requested, Reservation as Reserved, ReservationInput, ReservationStatus,
    StockLevel,
};
use notification_rules::{Attempt, EmailState, EmailStatus, Kind, NotificationInput, RetryPolicy};
use order_rules::{Checkout as Priced, OrderInput, OrderState, PricedLine, Shipment as Shown};
use payment_rules::{ChargeStatus, PaymentInput, PaymentState, RefundStatus};
use shipping_rules::{Advance, OrderFacts, Scheduling, ShipmentStatus, ShippingInput, Step};
use uuid::Uuid;

use crate::choreography::{self, Progress};

/// A service whose rules take part in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Order,
    Inventory,
    Payment,
    Shipping,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Self::Order,
        Self::Inventory,
        Self::Payment,
        Self::Shipping,
        Self::Notification,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Order => order_rules::SERVICE,
            Self::Inventory => inventory_rules::SERVICE,
            Self::Payment => payment_rules::SERVICE,
            Self::Shipping => shipping_rules::SERVICE,
            Self::Notification => notification_rules::SERVICE,
        }
    }

    /// The topics the service consumes, as its rules crate declares them: the bus delivers
    /// each event to the services subscribed to its topic, and to no other.
    pub fn subscriptions(self) -> &'static [&'static str] {
        match self {
            Self::Order => order_rules::SUBSCRIPTIONS,
            Self::Inventory => inventory_rules::SUBSCRIPTIONS,
            Self::Payment => payment_rules::SUBSCRIPTIONS,
            Self::Shipping => shipping_rules::SUBSCRIPTIONS,
            Self::Notification => notification_rules::SUBSCRIPTIONS,
        }
    }

    /// Whether the service declares it does something with the event (its rules crate's
    /// `HANDLES`); the bus delivers it either way, as Kafka does.
    pub fn handles(self, event: &Event) -> bool {
        choreography::handles(self.name(), event.event_type())
    }

    /// Whether the service's rules do anything with the event: the input they map it to.
    pub fn reacts_to(self, event: &Event) -> bool {
        match self {
            Self::Order => {
                matches!(event, Event::ProductSnapshot(_)) || order_rules::order_of(event).is_some()
            }
            Self::Inventory => inventory_rules::input_of(event).is_some(),
            Self::Payment => payment_rules::input_of(event).is_some(),
            Self::Shipping => shipping_rules::input_of(event).is_some(),
            Self::Notification => notification_rules::input_of(event).is_some(),
        }
    }
}

/// What the card processor does with a payment method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Card {
    Good,
    Declined,
}

/// A call to the processor that goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing reaches the processor (5xx, refused connection): a retry is a first attempt.
    Unavailable,
    /// The processor charges and the answer is lost (a timeout): a retry under the same
    /// idempotency key learns the outcome.
    AnswerLost,
}

/// One customer's checkout and what happens around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Index into the world's customers.
    pub customer: usize,
    /// (SKU, quantity), each SKU once.
    pub lines: Vec<(String, i32)>,
    pub card: Card,
    /// What goes wrong with the first charge attempts, in order.
    pub faults: Vec<Fault>,
    /// The customer asks to cancel, at some moment.
    pub cancel: bool,
    /// The order's deadline passes, at some moment.
    pub deadline: bool,
    /// The reservation's time runs out, at some moment while it is held.
    pub expiry: bool,
}

impl Script {
    /// A checkout of `lines` with a good card, where nothing else happens.
    pub fn buying(lines: &[(&str, i32)]) -> Self {
        Self {
            customer: 0,
            lines: lines
                .iter()
                .map(|(sku, quantity)| ((*sku).to_owned(), *quantity))
                .collect(),
            card: Card::Good,
            faults: Vec::new(),
            cancel: false,
            deadline: false,
            expiry: false,
        }
    }
}

/// The world the saga runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct World {
    /// Units on hand per SKU before any sale.
    pub stock: BTreeMap<String, i64>,
    /// How many customers there are (each registers once).
    pub customers: usize,
    pub checkouts: Vec<Script>,
    /// How many times a delivered message may come again.
    pub redeliveries: usize,
}

/// The unit price of every SKU in the simulation, in minor units.
pub const UNIT_PRICE: i64 = 1250;
pub const CURRENCY: &str = "EUR";

/// Something that can happen next.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Auth publishes a customer's UserRegistered.
    Register(usize),
    /// A customer checks out (script index).
    Place(usize),
    /// A consumer handles the next message of a stream (topic, key).
    Deliver {
        service: Service,
        topic: &'static str,
        key: String,
    },
    /// A message the service handled comes again (redelivery after a crash, a replay).
    Redeliver { service: Service, message: usize },
    /// The payment worker claims a due charge; the call is in flight.
    ClaimCharge(String),
    /// The processor answers the charge in flight.
    AnswerCharge(String),
    /// The payment worker refunds a due refund.
    Refund(String),
    /// The mail sender sends a notice's e-mail (notice index).
    SendMail(usize),
    /// The warehouse takes the next step of an order's shipment.
    Ship(String, Step),
    /// The customer asks to cancel an order.
    Cancel(String),
    /// The order's deadline passes: the deadline worker finds it.
    Deadline(String),
    /// The reservation's time runs out: the expiry worker finds it.
    Expire(String),
}

/// Picks the next action among those possible.
pub trait Chooser {
    fn pick(&mut self, actions: &[Action]) -> usize;
}

/// The first possible action, in [`Action`]'s order: a story without surprises.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fifo;

impl Chooser for Fifo {
    fn pick(&mut self, _: &[Action]) -> usize {
        0
    }
}

/// Picks with a list of numbers (from a property test), then the first action once they run out.
#[derive(Debug, Clone, Default)]
pub struct Choices {
    pub numbers: Vec<u16>,
    pub next: usize,
}

impl Choices {
    pub fn new(numbers: Vec<u16>) -> Self {
        Self { numbers, next: 0 }
    }
}

impl Chooser for Choices {
    fn pick(&mut self, actions: &[Action]) -> usize {
        let number = self.numbers.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        usize::from(number) % actions.len()
    }
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event_id: u64,
    pub event: Event,
    pub at: DateTime<Utc>,
}

/// What set a service acting, and what it published in turn: a step of the choreography.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaction {
    /// The service that acted.
    pub by: Service,
    /// What made it act.
    pub trigger: Trigger,
    /// What it published, in order.
    pub emitted: Vec<EventType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An event its rules react to, and the service that published it.
    Event {
        event: EventType,
        from: &'static str,
    },
    /// One of its workers, a command, or the world: what happened, in words.
    Action(&'static str),
}

/// Where an order's saga stood after a step, as [`progress`] read it.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Messages on the bus at that moment.
    pub published: usize,
    pub seen: BTreeSet<EventType>,
    pub progress: Progress,
}

#[derive(Debug, Clone)]
struct OrderRecord {
    state: OrderState,
    total_minor: i64,
    lines: BTreeMap<String, i64>,
    shipment: Option<Shown>,
}

#[derive(Debug, Clone)]
struct NoticeRecord {
    order_id: String,
    user_id: Option<String>,
    kind: Kind,
    source_event_id: u64,
    email: EmailState,
}

/// The processor's book: payment intents by idempotency key, refunds by their key.
#[derive(Debug, Clone, Default)]
struct Processor {
    charges: Vec<LedgerCharge>,
    refunds: BTreeMap<String, LedgerRefund>,
}

/// Every service's state, the bus, the processor and the world.
#[derive(Debug, Clone)]
pub struct Sim {
    world: World,
    clock: DateTime<Utc>,
    log: Vec<Message>,
    queues: BTreeMap<(Service, &'static str, String), VecDeque<usize>>,
    inbox: BTreeMap<Service, BTreeSet<u64>>,
    handled: BTreeMap<Service, Vec<usize>>,
    redeliveries_left: usize,
    registered: BTreeSet<usize>,
    placed: BTreeMap<usize, Option<String>>,
    happened: BTreeSet<Action>,
    /// Order service: orders.
    orders: BTreeMap<String, OrderRecord>,
    /// Inventory service: stock and reservations.
    stock: BTreeMap<String, StockLevel>,
    reservations: BTreeMap<String, (ReservationStatus, Vec<Requested>)>,
    /// Payment service: payment states, the books, charges in flight.
    payments: BTreeMap<String, PaymentState>,
    transactions: Vec<Transaction>,
    in_flight: BTreeSet<String>,
    attempts: BTreeMap<String, usize>,
    processor: Processor,
    /// Shipping service: orders learnt, shipments.
    to_ship: BTreeMap<String, OrderFacts>,
    shipments: BTreeMap<String, (Uuid, ShipmentStatus)>,
    /// Notification service: customers, orders' facts, notices.
    customers: BTreeSet<String>,
    customer_orders: BTreeMap<String, (String, notification_rules::OrderFacts)>,
    notices: Vec<NoticeRecord>,
    /// Per order, where its saga stood after each step that changed what was seen.
    checkpoints: BTreeMap<String, Vec<Checkpoint>>,
    /// Where a recorded progress was wrong.
    progress_failures: Vec<String>,
    /// Every step a service took, and why.
    reactions: Vec<Reaction>,
    /// What a real service would have dead-lettered or refused to do.
    failures: Vec<String>,
    steps: usize,
    /// A copy run ahead to check a progress: it records none of its own.
    fork: bool,
}

/// The first moment of every simulation: a Monday morning.
fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0)
        .single()
        .unwrap_or_default()
}

fn user_id(customer: usize) -> String {
    Uuid::from_u128(0xC000 + customer as u128).to_string()
}

impl Sim {
    /// The world before anything happened: stock set, nobody registered, nothing ordered.
    pub fn new(world: World) -> Self {
        let stock = world
            .stock
            .iter()
            .filter_map(|(sku, units)| {
                inventory_rules::set_on_hand(None, sku, *units)
                    .ok()
                    .map(|level| (sku.clone(), level))
            })
            .collect();
        Self {
            redeliveries_left: world.redeliveries,
            world,
            clock: epoch(),
            log: Vec::new(),
            queues: BTreeMap::new(),
            inbox: BTreeMap::new(),
            handled: BTreeMap::new(),
            registered: BTreeSet::new(),
            placed: BTreeMap::new(),
            happened: BTreeSet::new(),
            orders: BTreeMap::new(),
            stock,
            reservations: BTreeMap::new(),
            payments: BTreeMap::new(),
            transactions: Vec::new(),
            in_flight: BTreeSet::new(),
            attempts: BTreeMap::new(),
            processor: Processor::default(),
            to_ship: BTreeMap::new(),
            shipments: BTreeMap::new(),
            customers: BTreeSet::new(),
            customer_orders: BTreeMap::new(),
            notices: Vec::new(),
            checkpoints: BTreeMap::new(),
            progress_failures: Vec::new(),
            reactions: Vec::new(),
            failures: Vec::new(),
            steps: 0,
            fork: false,
        }
    }

    /// The same simulation without recording or checking the saga's progress at every step
    /// (which runs a copy ahead each time): for timing the rules alone.
    pub fn without_progress_checks(mut self) -> Self {
        self.fork = true;
        self
    }

    // --- the bus ------------------------------------------------------------------------------

    fn publish(&mut self, event: Event) {
        let index = self.log.len();
        let topic = event.topic();
        let key = event.key();
        for service in Service::ALL {
            if service.subscriptions().contains(&topic) {
                self.queues
                    .entry((service, topic, key.clone()))
                    .or_default()
                    .push_back(index);
            }
        }
        self.log.push(Message {
            event_id: index as u64 + 1,
            event,
            at: self.clock,
        });
    }

    fn publish_all(&mut self, by: Service, events: Vec<Event>) {
        for event in events {
            let declared = choreography::publisher(event.event_type());
            if declared != by.name() {
                self.failures.push(format!(
                    "{} published {}, which the choreography gives to {declared}",
                    by.name(),
                    event.type_name()
                ));
            }
            self.publish(event);
        }
    }

    /// Every message published so far, in publication order.
    pub fn log(&self) -> &[Message] {
        &self.log
    }

    /// The event types published for an order, in publication order.
    pub fn events_of(&self, order_id: &str) -> Vec<EventType> {
        self.log
            .iter()
            .filter(|m| m.event.key() == order_id)
            .map(|m| m.event.event_type())
            .collect()
    }

    // --- what can happen ----------------------------------------------------------------------

    /// Every action possible now, in a fixed order.
    pub fn actions(&self) -> Vec<Action> {
        let mut actions = Vec::new();
        for customer in 0..self.world.customers {
            if !self.registered.contains(&customer) {
                actions.push(Action::Register(customer));
            }
        }
        for index in 0..self.world.checkouts.len() {
            if !self.placed.contains_key(&index) {
                actions.push(Action::Place(index));
            }
        }
        for ((service, topic, key), queue) in &self.queues {
            if !queue.is_empty() {
                actions.push(Action::Deliver {
                    service: *service,
                    topic,
                    key: key.clone(),
                });
            }
        }
        for (order_id, state) in &self.payments {
            if self.in_flight.contains(order_id) {
                actions.push(Action::AnswerCharge(order_id.clone()));
            } else if state.charge == ChargeStatus::Due {
                actions.push(Action::ClaimCharge(order_id.clone()));
            }
            if state.refund == RefundStatus::Due {
                actions.push(Action::Refund(order_id.clone()));
            }
        }
        for (index, notice) in self.notices.iter().enumerate() {
            let addressed = notice
                .user_id
                .as_ref()
                .is_some_and(|user| self.customers.contains(user));
            if addressed && notice.email.status == EmailStatus::Pending {
                actions.push(Action::SendMail(index));
            }
        }
        for (order_id, (_, status)) in &self.shipments {
            match status {
                ShipmentStatus::Scheduled => {
                    actions.push(Action::Ship(order_id.clone(), Step::Dispatch));
                }
                ShipmentStatus::Dispatched => {
                    actions.push(Action::Ship(order_id.clone(), Step::Deliver));
                }
                ShipmentStatus::Delivered => {}
            }
        }
        if self.redeliveries_left > 0 {
            for (service, handled) in &self.handled {
                if let Some(message) = handled.last() {
                    actions.push(Action::Redeliver {
                        service: *service,
                        message: *message,
                    });
                }
            }
        }
        for (index, placed) in &self.placed {
            let (Some(order_id), script) = (placed, &self.world.checkouts[*index]) else {
                continue;
            };
            let mut world = |wanted: bool, action: Action| {
                if wanted && !self.happened.contains(&action) {
                    actions.push(action);
                }
            };
            world(script.cancel, Action::Cancel(order_id.clone()));
            world(script.deadline, Action::Deadline(order_id.clone()));
            let reserved = self
                .reservations
                .get(order_id)
                .is_some_and(|(status, _)| *status == ReservationStatus::Reserved);
            world(script.expiry && reserved, Action::Expire(order_id.clone()));
        }
        actions
    }

    /// Runs until nothing is left to do; returns how many actions ran. Gives up (recording a
    /// failure) after `limit` actions.
    pub fn settle(&mut self, chooser: &mut impl Chooser, limit: usize) -> usize {
        let mut ran = 0;
        loop {
            let actions = self.actions();
            if actions.is_empty() {
                return ran;
            }
            if ran == limit {
                self.failures
                    .push(format!("still busy after {limit} actions: {actions:?}"));
                return ran;
            }
            let picked = chooser.pick(&actions);
            self.act(actions[picked].clone());
            ran += 1;
        }
    }

    /// Runs the first possible action of the system (not the world's: no registration,
    /// checkout, cancel, deadline, expiry or redelivery) until `done` holds or nothing is left.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) {
        while !done(self) {
            let next = self.actions().into_iter().find(|action| {
                !matches!(
                    action,
                    Action::Register(_)
                        | Action::Place(_)
                        | Action::Redeliver { .. }
                        | Action::Cancel(_)
                        | Action::Deadline(_)
                        | Action::Expire(_)
                )
            });
            match next {
                Some(action) => self.act(action),
                None => return,
            }
        }
    }

    /// Does one action.
    pub fn act(&mut self, action: Action) {
        self.steps += 1;
        self.clock += Duration::seconds(7);
        let published = self.log.len();
        let step = self.step_of(&action);
        match &action {
            Action::Register(customer) => self.register(*customer),
            Action::Place(index) => {
                self.place(*index);
            }
            Action::Deliver {
                service,
                topic,
                key,
            } => self.deliver(*service, topic, key),
            Action::Redeliver { service, message } => {
                self.redeliveries_left -= 1;
                let event = &self.log[*message].event;
                let stream = (*service, event.topic(), event.key());
                self.queues.entry(stream).or_default().push_back(*message);
            }
            Action::ClaimCharge(order_id) => self.claim_charge(order_id),
            Action::AnswerCharge(order_id) => self.answer_charge(order_id),
            Action::Refund(order_id) => self.refund(order_id),
            Action::SendMail(index) => self.send_mail(*index),
            Action::Ship(order_id, step) => self.ship(order_id, *step),
            Action::Cancel(order_id) => self.command(order_id, &OrderInput::CustomerCancelled),
            Action::Deadline(order_id) => {
                // The deadline worker looks only at pending orders; the rule ignores the rest.
                self.command(order_id, &OrderInput::DeadlinePassed);
            }
            Action::Expire(order_id) => {
                self.reservation_input(order_id, ReservationInput::TimeRanOut);
            }
        }
        if let Some((by, trigger)) = step {
            let emitted = self.log[published..]
                .iter()
                .map(|m| m.event.event_type())
                .collect();
            self.reactions.push(Reaction {
                by,
                trigger,
                emitted,
            });
        }
        self.happened.insert(action);
        self.checkpoint();
    }

    /// The service an action sets acting and why, if it is a step of the choreography.
    fn step_of(&self, action: &Action) -> Option<(Service, Trigger)> {
        Some(match action {
            Action::Deliver {
                service,
                topic,
                key,
            } => {
                let index = *self.queues.get(&(*service, *topic, key.clone()))?.front()?;
                let message = &self.log[index];
                let handled = self.inbox.get(service);
                if !service.reacts_to(&message.event)
                    || handled.is_some_and(|ids| ids.contains(&message.event_id))
                {
                    return None;
                }
                let event = message.event.event_type();
                (
                    *service,
                    Trigger::Event {
                        event,
                        from: choreography::publisher(event),
                    },
                )
            }
            Action::ClaimCharge(_) | Action::AnswerCharge(_) => {
                (Service::Payment, Trigger::Action("charge at the processor"))
            }
            Action::Refund(_) => (Service::Payment, Trigger::Action("refund at the processor")),
            Action::Ship(..) => (Service::Shipping, Trigger::Action("warehouse step")),
            Action::Cancel(_) => (Service::Order, Trigger::Action("customer cancels")),
            Action::Deadline(_) => (Service::Order, Trigger::Action("deadline passes")),
            Action::Expire(_) => (Service::Inventory, Trigger::Action("reservation expires")),
            // A checkout is recorded by `place`, which scenarios also call directly.
            Action::Register(_)
            | Action::Place(_)
            | Action::Redeliver { .. }
            | Action::SendMail(_) => return None,
        })
    }

    /// Every step a service took, and why, in order.
    pub fn reactions(&self) -> &[Reaction] {
        &self.reactions
    }

    fn checkpoint(&mut self) {
        if self.fork {
            return;
        }
        let saga: BTreeSet<&str> = choreography::order_topics().into_iter().collect();
        let mut seen: BTreeMap<String, BTreeSet<EventType>> = BTreeMap::new();
        for message in &self.log {
            if saga.contains(message.event.topic()) {
                seen.entry(message.event.key())
                    .or_default()
                    .insert(message.event.event_type());
            }
        }
        for (order_id, seen) in seen {
            let checkpoints = self.checkpoints.entry(order_id.clone()).or_default();
            if checkpoints.last().is_some_and(|last| last.seen == seen) {
                continue;
            }
            let checkpoint = Checkpoint {
                published: self.log.len(),
                progress: choreography::progress(&seen),
                seen,
            };
            checkpoints.push(checkpoint.clone());
            if let Some(error) = self.check_progress(&order_id, &checkpoint) {
                self.progress_failures.push(error);
            }
        }
    }

    /// Checks a progress against the rules: a copy of the simulation runs on with nothing more
    /// from the world (no cancel, deadline, expiry or redelivery). A saga said to wait for a
    /// service must see that service publish an event type not seen before; one said complete
    /// must see nothing new, but from the service it names as uncertain.
    fn check_progress(&self, order_id: &str, checkpoint: &Checkpoint) -> Option<String> {
        let mut ahead = self.clone();
        ahead.fork = true;
        ahead.run_until(|_| false);
        let later: Vec<(EventType, &'static str)> = ahead.log[checkpoint.published..]
            .iter()
            .filter(|m| m.event.key() == order_id)
            .map(|m| m.event.event_type())
            .filter(|event| !checkpoint.seen.contains(event))
            .map(|event| (event, choreography::publisher(event)))
            .collect();
        let right = match &checkpoint.progress {
            Progress::Waiting { service, .. } => {
                later.iter().any(|(_, publisher)| publisher == service)
            }
            Progress::Complete { unless, .. } => later
                .iter()
                .all(|(_, publisher)| Some(*publisher) == *unless),
        };
        (!right).then(|| {
            format!(
                "order {order_id}: after {:?} progress said {:?}, but left alone the services \
                 went on with {later:?}",
                checkpoint.seen, checkpoint.progress
            )
        })
    }

    // --- the world ----------------------------------------------------------------------------

    /// Auth registers a customer and publishes UserRegistered.
    pub fn register(&mut self, customer: usize) {
        if !self.registered.insert(customer) {
            return;
        }
        let event = UserRegistered {
            user_id: user_id(customer),
            email: format!("customer{customer}@example.com"),
            display_name: format!("Customer {customer}"),
            registered_at: self.clock.timestamp_millis(),
        };
        self.publish(event.into());
    }

    /// The customer of script `index` checks out: priced by the order rules, stored pending,
    /// and OrderCreated published. Returns the order's id, `None` for a refused checkout.
    pub fn place(&mut self, index: usize) -> Option<String> {
        if let Some(placed) = self.placed.get(&index) {
            return placed.clone();
        }
        let script = self.world.checkouts[index].clone();
        let lines = script
            .lines
            .iter()
            .map(|(sku, quantity)| PricedLine {
                sku: sku.clone(),
                name: sku.clone(),
                quantity: *quantity,
                unit_price_minor: UNIT_PRICE,
                currency: CURRENCY.to_owned(),
            })
            .collect();
        let token = match script.card {
            Card::Good => "tok_visa",
            Card::Declined => "tok_chargeDeclined",
        };
        // A domestic postal address: the simulation ships as the shop does at home.
        let address = order_rules::ShippingAddress::Postal(events::PostalAddress {
            name: "Ada Lovelace".into(),
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: shipping_rules::DEFAULT_HOME_COUNTRY.into(),
        });
        let Ok(checkout) = Priced::new(lines, token.into(), address) else {
            self.placed.insert(index, None);
            return None;
        };
        let order_id = Uuid::from_u128(0x0D00 + index as u128).to_string();
        let user = user_id(script.customer);
        self.orders.insert(
            order_id.clone(),
            OrderRecord {
                state: OrderState::pending(),
                total_minor: checkout.total_minor,
                lines: checkout
                    .lines
                    .iter()
                    .map(|line| (line.sku.clone(), i64::from(line.quantity)))
                    .collect(),
                shipment: None,
            },
        );
        self.placed.insert(index, Some(order_id.clone()));
        let created = checkout.created(&order_id, &user);
        if !self.happened.contains(&Action::Place(index)) {
            self.reactions.push(Reaction {
                by: Service::Order,
                trigger: Trigger::Action("checkout"),
                emitted: vec![created.event_type()],
            });
            self.happened.insert(Action::Place(index));
        }
        self.publish_all(Service::Order, vec![created]);
        self.checkpoint();
        Some(order_id)
    }

    // --- consumers ----------------------------------------------------------------------------

    fn deliver(&mut self, service: Service, topic: &'static str, key: &str) {
        let stream = (service, topic, key.to_owned());
        let Some(index) = self.queues.get_mut(&stream).and_then(VecDeque::pop_front) else {
            return;
        };
        let message = self.log[index].clone();
        // The inbox: a message handled before is dropped.
        if !self
            .inbox
            .entry(service)
            .or_default()
            .insert(message.event_id)
        {
            return;
        }
        self.handled.entry(service).or_default().push(index);
        match service {
            Service::Order => self.order_handles(&message),
            Service::Inventory => self.inventory_handles(&message),
            Service::Payment => self.payment_handles(&message),
            Service::Shipping => self.shipping_handles(&message),
            Service::Notification => self.notification_handles(&message),
        }
    }

    fn order_handles(&mut self, message: &Message) {
        let event = &message.event;
        let Some(order_id) = order_rules::order_of(event) else {
            return;
        };
        let Some(record) = self.orders.get_mut(order_id) else {
            self.failures.push(format!(
                "order: {} for unknown order {order_id}",
                event.type_name()
            ));
            return;
        };
        if order_rules::shipment_order(event).is_some()
            && let Some(next) =
                order_rules::track_shipment(record.shipment.as_ref(), event, message.at)
        {
            record.shipment = Some(next);
        }
        if let Some((order_id, input)) = OrderInput::from_event(event) {
            let order_id = order_id.to_owned();
            self.command(&order_id, &input);
        }
    }

    /// The order service's decide-then-save step, for an event's input or a command.
    fn command(&mut self, order_id: &str, input: &OrderInput) {
        let Some(record) = self.orders.get_mut(order_id) else {
            return;
        };
        let decision = order_rules::decide(order_id, &record.state, input);
        record.state = decision.state;
        self.publish_all(Service::Order, decision.emit);
    }

    fn inventory_handles(&mut self, message: &Message) {
        let Some((order_id, input)) = inventory_rules::input_of(&message.event) else {
            return;
        };
        let order_id = order_id.to_owned();
        match input {
            InventoryInput::OrderCreated(lines) => {
                let decided = self.reservations.contains_key(&order_id);
                let levels: HashMap<String, StockLevel> = self
                    .stock
                    .iter()
                    .map(|(sku, level)| (sku.clone(), level.clone()))
                    .collect();
                let expires = (self.clock + Duration::minutes(15)).timestamp_millis();
                let Some((reservation, event)) =
                    inventory_rules::on_order_created(&order_id, decided, &levels, &lines, expires)
                else {
                    return;
                };
                if let Reserved::Granted(granted) = reservation {
                    for line in &granted {
                        self.move_stock(line, inventory_rules::StockMovement::Reserve);
                    }
                    self.reservations
                        .insert(order_id, (ReservationStatus::Reserved, granted));
                }
                self.publish_all(Service::Inventory, vec![event]);
            }
            InventoryInput::Reservation(input) => self.reservation_input(&order_id, input),
        }
    }

    fn move_stock(&mut self, line: &Requested, movement: inventory_rules::StockMovement) {
        match self.stock.get_mut(&line.sku) {
            Some(level) => *level = movement.apply(level, line.quantity),
            None => self.failures.push(format!(
                "inventory: {movement:?} of {} never stocked",
                line.sku
            )),
        }
    }

    /// The inventory service's decide-then-save step for a reservation.
    fn reservation_input(&mut self, order_id: &str, input: ReservationInput) {
        let status = self.reservations.get(order_id).map(|(status, _)| *status);
        let Some(decision) = inventory_rules::react(order_id, status, input) else {
            return;
        };
        let lines = self
            .reservations
            .get(order_id)
            .map(|(_, lines)| lines.clone())
            .unwrap_or_default();
        if let Some(movement) = decision.movement {
            for line in &lines {
                self.move_stock(line, movement);
            }
        }
        if let Some((status, _)) = self.reservations.get_mut(order_id) {
            *status = decision.status;
        }
        self.publish_all(Service::Inventory, decision.emit.into_iter().collect());
    }

    fn payment_handles(&mut self, message: &Message) {
        if let Some((order_id, input)) = payment_rules::input_of(&message.event) {
            let order_id = order_id.to_owned();
            self.pay(&order_id, input);
        }
    }

    /// The payment service's decide-then-save step.
    fn pay(&mut self, order_id: &str, input: PaymentInput) {
        let before = self.payments.get(order_id).cloned().unwrap_or_default();
        let decision = payment_rules::decide(order_id, &before, input);
        if let Some(record) = decision.record {
            self.transactions.push(Transaction {
                order_id: order_id.to_owned(),
                kind: record.kind,
                status: record.status,
                amount_minor: record.amount_minor,
                provider_reference: record.provider_reference,
            });
        }
        self.payments.insert(order_id.to_owned(), decision.state);
        self.publish_all(Service::Payment, decision.emit);
    }

    fn shipping_handles(&mut self, message: &Message) {
        let Some((order_id, input)) = shipping_rules::input_of(&message.event) else {
            return;
        };
        let order_id = order_id.to_owned();
        match input {
            ShippingInput::OrderCreated(facts) => {
                self.to_ship.entry(order_id).or_insert(facts);
            }
            ShippingInput::OrderPaid => {
                let paid_on: NaiveDate = message.at.date_naive();
                let shipment_id = Uuid::from_u128(0x5000 + self.shipments.len() as u128);
                let scheduled = self.shipments.contains_key(&order_id);
                match shipping_rules::schedule(
                    &order_id,
                    self.to_ship.get(&order_id),
                    scheduled,
                    paid_on,
                    shipment_id,
                    shipping_rules::DEFAULT_HOME_COUNTRY,
                ) {
                    Scheduling::Schedule { emit, .. } => {
                        self.shipments
                            .insert(order_id, (shipment_id, ShipmentStatus::Scheduled));
                        self.publish_all(Service::Shipping, vec![emit]);
                    }
                    Scheduling::AlreadyScheduled => {}
                    Scheduling::UnknownOrder => self.failures.push(format!(
                        "shipping: OrderPaid before OrderCreated for {order_id}"
                    )),
                }
            }
        }
    }

    fn notification_handles(&mut self, message: &Message) {
        let Some(input) = notification_rules::input_of(&message.event) else {
            return;
        };
        match input {
            NotificationInput::Customer { user_id, .. } => {
                self.customers.insert(user_id.to_owned());
            }
            NotificationInput::Order {
                order_id,
                user_id,
                facts,
            } => {
                self.customer_orders
                    .entry(order_id.to_owned())
                    .or_insert_with(|| (user_id.to_owned(), facts));
                for notice in &mut self.notices {
                    if notice.order_id == order_id && notice.user_id.is_none() {
                        notice.user_id = Some(user_id.to_owned());
                    }
                }
            }
            NotificationInput::Lifecycle { order_id } => {
                let known = self.customer_orders.get(order_id);
                let noticed: Vec<Kind> = self
                    .notices
                    .iter()
                    .filter(|notice| notice.order_id == order_id)
                    .map(|notice| notice.kind)
                    .collect();
                let facts = known.map(|(_, facts)| facts);
                if let Some(notice) =
                    notification_rules::new_notice(&message.event, facts, &noticed)
                {
                    self.notices.push(NoticeRecord {
                        order_id: notice.order_id,
                        user_id: known.map(|(user, _)| user.clone()),
                        kind: notice.kind,
                        source_event_id: message.event_id,
                        email: EmailState::pending(),
                    });
                }
            }
        }
    }

    // --- workers ------------------------------------------------------------------------------

    fn claim_charge(&mut self, order_id: &str) {
        if let Some(state) = self.payments.get_mut(order_id) {
            *state = payment_rules::claim_charge(state);
            self.in_flight.insert(order_id.to_owned());
        }
    }

    /// The processor answers a charge: idempotent by key (the order id); the script's faults
    /// come first.
    fn answer_charge(&mut self, order_id: &str) {
        self.in_flight.remove(order_id);
        let Some(state) = self.payments.get(order_id).cloned() else {
            return;
        };
        let Some(terms) = state.terms else {
            return;
        };
        let script = self.script_of(order_id);
        let attempt = self.attempts.entry(order_id.to_owned()).or_default();
        let fault = script
            .as_ref()
            .and_then(|s| s.faults.get(*attempt).copied());
        *attempt += 1;
        if fault == Some(Fault::Unavailable) {
            self.pay(order_id, PaymentInput::ChargeOutcomeUnknown);
            return;
        }
        let declined = terms.payment_token == "tok_chargeDeclined";
        let charge = match self
            .processor
            .charges
            .iter()
            .find(|charge| charge.idempotency_key == order_id)
        {
            Some(charge) => charge.clone(),
            None => {
                let charge = LedgerCharge {
                    payment_intent: format!("pi_{}", self.processor.charges.len() + 1),
                    idempotency_key: order_id.to_owned(),
                    description: Some(format!("Bazaar order {order_id}")),
                    amount: terms.amount_minor,
                    status: if declined { "failed" } else { "succeeded" }.into(),
                    amount_refunded: 0,
                };
                self.processor.charges.push(charge.clone());
                charge
            }
        };
        let input = if fault == Some(Fault::AnswerLost) {
            PaymentInput::ChargeOutcomeUnknown
        } else if charge.status == "succeeded" {
            PaymentInput::ChargeSucceeded {
                payment_id: charge.payment_intent,
            }
        } else {
            PaymentInput::ChargeDeclined {
                reason: "card_declined".into(),
            }
        };
        self.pay(order_id, input);
    }

    fn refund(&mut self, order_id: &str) {
        let Some(state) = self.payments.get(order_id).cloned() else {
            return;
        };
        let (Some(terms), Some(payment_id)) = (state.terms, state.payment_id) else {
            return;
        };
        let key = format!("refund-{order_id}");
        if !self.processor.refunds.contains_key(&key) {
            if let Some(charge) = self
                .processor
                .charges
                .iter_mut()
                .find(|charge| charge.payment_intent == payment_id)
            {
                charge.amount_refunded += terms.amount_minor;
            }
            self.processor.refunds.insert(
                key,
                LedgerRefund {
                    payment_intent: payment_id,
                    amount: terms.amount_minor,
                },
            );
        }
        self.pay(order_id, PaymentInput::RefundSucceeded);
    }

    fn send_mail(&mut self, index: usize) {
        let policy = RetryPolicy {
            initial: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(60),
        };
        if let Some(notice) = self.notices.get_mut(index) {
            notice.email =
                notification_rules::after_attempt(notice.email, Attempt::Accepted, &policy).state;
        }
    }

    /// The warehouse (an admin) takes a step of an order's shipment.
    fn ship(&mut self, order_id: &str, step: Step) {
        let Some((shipment_id, status)) = self.shipments.get(order_id).copied() else {
            return;
        };
        match shipping_rules::advance(order_id, &shipment_id.to_string(), status, step) {
            Advance::Moved { status, emit } => {
                self.shipments
                    .insert(order_id.to_owned(), (shipment_id, status));
                self.publish_all(Service::Shipping, vec![emit]);
            }
            Advance::AlreadyDone => {}
            Advance::Refused(why) => self.failures.push(format!("shipping: {why}")),
        }
    }

    fn script_of(&self, order_id: &str) -> Option<Script> {
        self.placed
            .iter()
            .find(|(_, placed)| placed.as_deref() == Some(order_id))
            .map(|(index, _)| self.world.checkouts[*index].clone())
    }

    // --- what came of it ----------------------------------------------------------------------

    /// The order's state in the order service.
    pub fn order(&self, order_id: &str) -> Option<&OrderState> {
        self.orders.get(order_id).map(|record| &record.state)
    }

    /// The id of script `index`'s order, once placed.
    pub fn order_id(&self, index: usize) -> Option<&str> {
        self.placed.get(&index).and_then(Option::as_deref)
    }

    pub fn stock(&self, sku: &str) -> Option<&StockLevel> {
        self.stock.get(sku)
    }

    pub fn payment(&self, order_id: &str) -> Option<&PaymentState> {
        self.payments.get(order_id)
    }

    pub fn shipment(&self, order_id: &str) -> Option<ShipmentStatus> {
        self.shipments.get(order_id).map(|(_, status)| *status)
    }

    /// The kinds of notice an order got, in order.
    pub fn notices(&self, order_id: &str) -> Vec<Kind> {
        self.notices
            .iter()
            .filter(|notice| notice.order_id == order_id)
            .map(|notice| notice.kind)
            .collect()
    }

    /// Whether a charge of the order is in flight (claimed by the payment worker, not answered).
    pub fn charge_in_flight(&self, order_id: &str) -> bool {
        self.in_flight.contains(order_id)
    }

    /// The processor's successful charges of an order.
    pub fn charges(&self, order_id: &str) -> usize {
        self.processor
            .charges
            .iter()
            .filter(|charge| charge.idempotency_key == order_id && charge.status == "succeeded")
            .count()
    }

    /// What a real service would have dead-lettered or refused, and runs that did not settle.
    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// How many actions ran.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Every database and the processor's ledger, as the invariant checker reads them.
    pub fn snapshot(&self) -> Snapshot {
        let orders = self
            .orders
            .iter()
            .map(|(id, record)| Order {
                id: id.clone(),
                status: record.state.status(),
                reason: record.state.reason.clone(),
                total_minor: record.total_minor,
                refunded: record.state.refunded,
                lines: record.lines.clone(),
                shipment_id: record
                    .shipment
                    .as_ref()
                    .map(|shipment| shipment.shipment_id.clone()),
            })
            .collect();
        let inventory = InventoryDb {
            stock: self
                .stock
                .values()
                .map(|level| Stock {
                    sku: level.sku.clone(),
                    on_hand: level.on_hand,
                    reserved: level.reserved,
                })
                .collect(),
            reservations: self
                .reservations
                .iter()
                .map(|(order_id, (status, lines))| Reservation {
                    order_id: order_id.clone(),
                    status: *status,
                    lines: lines
                        .iter()
                        .map(|line| (line.sku.clone(), line.quantity))
                        .collect(),
                })
                .collect(),
        };
        let payment = PaymentDb {
            payments: self
                .payments
                .iter()
                .map(|(order_id, state)| Payment {
                    order_id: order_id.clone(),
                    charge_status: state.charge,
                    refund_status: state.refund,
                })
                .collect(),
            transactions: self.transactions.clone(),
        };
        let ledger = Ledger {
            charges: self.processor.charges.clone(),
            refunds: self.processor.refunds.values().cloned().collect(),
        };
        let shipments = self
            .shipments
            .iter()
            .map(|(order_id, (id, status))| Shipment {
                id: id.to_string(),
                order_id: order_id.clone(),
                status: *status,
            })
            .collect();
        let notifications = self
            .notices
            .iter()
            .enumerate()
            .map(|(index, notice)| Notification {
                id: format!("n-{index}"),
                order_id: Some(notice.order_id.clone()),
                kind: notice.kind,
                source_event_id: Some(notice.source_event_id.to_string()),
                email_status: Some(notice.email.status),
            })
            .collect();
        Snapshot {
            orders,
            inventory: Some(inventory),
            payment: Some(payment),
            ledger: Some(ledger),
            shipments: Some(shipments),
            notifications: Some(notifications),
            mail_files: None,
        }
    }

    /// The invariant checker's verdict on the simulation as it stands: every order accepted,
    /// every unit of stock accounted for from the world's stock, every e-mail sent.
    pub fn evaluate(&self) -> Evaluation {
        let expect = Expectations {
            accepted: self.orders.keys().cloned().collect(),
            only_accepted: false,
            initial_stock: self.world.stock.clone(),
            emails_sent: true,
        };
        evaluate(&self.snapshot(), &expect)
    }

    /// Where each order's saga stood after each step.
    pub fn checkpoints(&self, order_id: &str) -> &[Checkpoint] {
        self.checkpoints.get(order_id).map_or(&[], Vec::as_slice)
    }

    /// Every progress that the rules proved wrong (see [`Sim::checkpoints`]): at each step that
    /// changed what was seen of an order, a copy of the simulation ran on with nothing more from
    /// the world, and the service the progress named had to act (or, for a complete saga,
    /// nobody but the one it named as uncertain).
    pub fn progress_errors(&self) -> Vec<String> {
        self.progress_failures.clone()
    }
}

/// A world of `stock`, `customers` and `checkouts`, without redeliveries.
pub fn world(stock: &[(&str, i64)], customers: usize, checkouts: Vec<Script>) -> World {
    World {
        stock: stock
            .iter()
            .map(|(sku, units)| ((*sku).to_owned(), *units))
            .collect(),
        customers,
        checkouts,
        redeliveries: 0,
    }
}

/// The documented stories of the saga, each settled: a happy checkout, out of stock, a
/// declined card, a payment that lands after the reservation expired, a cancel while the charge
/// is in flight, and a deadline after a lost answer.
pub fn stories() -> Vec<(&'static str, Sim)> {
    let story = |name, script: Script, interrupt: Option<fn(String) -> Action>| {
        let mut sim = Sim::new(world(&[("TEE", 2)], 1, vec![script]));
        sim.register(0);
        if let (Some(order), Some(interrupt)) = (sim.place(0), interrupt) {
            sim.run_until(|sim| {
                sim.charge_in_flight(&order)
                    || sim
                        .payment(&order)
                        .is_some_and(|p| p.attempted && p.charge == ChargeStatus::Due)
            });
            sim.act(interrupt(order));
        }
        sim.settle(&mut Fifo, 10_000);
        (name, sim)
    };
    let with = |change: fn(&mut Script)| {
        let mut script = Script::buying(&[("TEE", 1)]);
        change(&mut script);
        script
    };
    vec![
        story("happy path", Script::buying(&[("TEE", 1)]), None),
        story("out of stock", Script::buying(&[("TEE", 3)]), None),
        story("declined", with(|s| s.card = Card::Declined), None),
        story(
            "late payment after expiry",
            with(|s| s.expiry = true),
            Some(Action::Expire),
        ),
        story(
            "cancel mid-charge",
            with(|s| s.cancel = true),
            Some(Action::Cancel),
        ),
        story(
            "deadline after a lost answer",
            with(|s| {
                s.deadline = true;
                s.faults = vec![Fault::AnswerLost];
            }),
            Some(Action::Deadline),
        ),
    ]
}

/// A Mermaid sequence diagram of the choreography: each step a service took in `reactions`
/// (but the notification service's, which publishes nothing), once, with everything it was
/// seen to publish in turn.
pub fn sequence_diagram<'a>(reactions: impl IntoIterator<Item = &'a Reaction>) -> String {
    let letter = |name: &str| match name {
        n if n == order_rules::SERVICE => "O",
        n if n == inventory_rules::SERVICE => "I",
        n if n == payment_rules::SERVICE => "P",
        n if n == shipping_rules::SERVICE => "S",
        _ => "X",
    };
    let mut steps: Vec<(Service, Trigger, Vec<EventType>)> = Vec::new();
    for reaction in reactions {
        if reaction.by == Service::Notification {
            continue;
        }
        match steps
            .iter_mut()
            .find(|(by, trigger, _)| *by == reaction.by && *trigger == reaction.trigger)
        {
            Some((_, _, emitted)) => {
                for event in &reaction.emitted {
                    if !emitted.contains(event) {
                        emitted.push(*event);
                    }
                }
            }
            None => steps.push((reaction.by, reaction.trigger, reaction.emitted.clone())),
        }
    }
    let mut text = String::from("sequenceDiagram\n");
    for service in [
        Service::Order,
        Service::Inventory,
        Service::Payment,
        Service::Shipping,
    ] {
        text.push_str(&format!(
            "    participant {} as {}\n",
            letter(service.name()),
            service.name()
        ));
    }
    for (by, trigger, emitted) in steps {
        let to = letter(by.name());
        let (arrow, what) = match trigger {
            Trigger::Event { event, from } => (format!("{}-){to}", letter(from)), event.name()),
            Trigger::Action(what) => (format!("{to}->>{to}"), what),
        };
        let names: Vec<&str> = emitted.iter().map(|event| event.name()).collect();
        let then = if names.is_empty() {
            String::new()
        } else {
            format!(" → {}", names.join(" / "))
        };
        text.push_str(&format!("    {arrow}: {what}{then}\n"));
    }
    text
}
