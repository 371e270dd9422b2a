//! Random sagas: random worlds (stock, customers, cards, processor faults, cancels, deadlines,
//! reservation expiry), played with random delivery orders (any stream of any consumer next,
//! as Kafka allows across keys and topics), redeliveries and worker timings. Every promise must
//! hold at the end, and the saga's progress must have named, at every step, who acted next.

use bazaar_saga::sim::{Card, Choices, Fault, Script, Sim, World};
use proptest::prelude::*;

const SKUS: [&str; 3] = ["TEE", "MUG", "CAP"];

fn script(customers: usize) -> impl Strategy<Value = Script> {
    (
        0..customers,
        proptest::sample::subsequence(SKUS.to_vec(), 1..=2),
        proptest::collection::vec(1..=3i32, 2),
        prop_oneof![3 => Just(Card::Good), 1 => Just(Card::Declined)],
        proptest::collection::vec(
            prop_oneof![Just(Fault::Unavailable), Just(Fault::AnswerLost)],
            0..=2,
        ),
        proptest::bool::weighted(0.25),
        proptest::bool::weighted(0.25),
        proptest::bool::weighted(0.25),
    )
        .prop_map(
            |(customer, skus, quantities, card, faults, cancel, deadline, expiry)| Script {
                customer,
                lines: skus
                    .into_iter()
                    .zip(quantities)
                    .map(|(sku, quantity)| (sku.to_owned(), quantity))
                    .collect(),
                card,
                faults,
                cancel,
                deadline,
                expiry,
            },
        )
}

fn world() -> impl Strategy<Value = World> {
    (1..=3usize).prop_flat_map(|customers| {
        (
            proptest::collection::vec(0..=4i64, SKUS.len()),
            proptest::collection::vec(script(customers), 1..=4),
            0..=6usize,
        )
            .prop_map(move |(stock, checkouts, redeliveries)| World {
                stock: SKUS
                    .iter()
                    .zip(stock)
                    .map(|(sku, units)| ((*sku).to_owned(), units))
                    .collect(),
                customers,
                checkouts,
                redeliveries,
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// One charge at most per order and exactly one per paid order, stock conserved, every saga
    /// final, the right notices each sent once; and progress right at every step.
    #[test]
    fn every_random_saga_keeps_every_promise(
        world in world(),
        choices in proptest::collection::vec(any::<u16>(), 0..600),
    ) {
        let mut sim = Sim::new(world);
        sim.settle(&mut Choices::new(choices), 10_000);
        prop_assert_eq!(sim.failures(), &[] as &[String]);
        prop_assert_eq!(sim.evaluate().violations, vec![]);
        prop_assert_eq!(sim.progress_errors(), Vec::<String>::new());
    }

    /// Whatever the order of deliveries, an order whose stock suffices and whose card is good,
    /// and that nobody cancels or lets expire, is paid, shipped and (the warehouse dispatching
    /// and delivering in the end) delivered.
    #[test]
    fn an_undisturbed_good_order_with_stock_is_always_shipped(
        quantity in 1..=3i32,
        redeliveries in 0..=6usize,
        faults in proptest::collection::vec(
            prop_oneof![Just(Fault::Unavailable), Just(Fault::AnswerLost)],
            0..=3,
        ),
        choices in proptest::collection::vec(any::<u16>(), 0..300),
    ) {
        let mut script = Script::buying(&[("TEE", quantity)]);
        script.faults = faults;
        let mut world = bazaar_saga::sim::world(&[("TEE", 3)], 1, vec![script]);
        world.redeliveries = redeliveries;
        let mut sim = Sim::new(world).without_progress_checks();
        sim.settle(&mut Choices::new(choices), 10_000);
        let order = sim.order_id(0).expect("placed").to_owned();
        prop_assert_eq!(
            sim.order(&order).map(|state| state.status()),
            Some(order_rules::OrderStatus::Delivered)
        );
        prop_assert_eq!(sim.charges(&order), 1);
        prop_assert_eq!(sim.evaluate().violations, vec![]);
    }
}
