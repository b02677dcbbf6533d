//! Reading ahead: where a page says where the next one is (a cursor token, a
//! next URL in the body or in a `Link` header), the run sends the request for
//! the next page before it reads this page's records; each page is still
//! asked for once, and the destination is the source.

use std::time::Duration;

use simsaas::SimConfig;

use crate::util::{Mode, SYNC, Setup, Style, World, describe, report};

#[tokio::test(flavor = "multi_thread")]
async fn each_page_is_asked_for_once_when_the_next_goes_ahead() {
    for style in [Style::Cursor, Style::NextUrlBody, Style::NextUrlLink] {
        let mut sim = SimConfig::new(61, 1_000);
        sim.source.latency = Duration::from_millis(5);
        let mut setup = Setup::new(style, Mode::Put);
        setup.page_size = 50;
        let world = World::start(&format!("ahead-{style:?}"), sim, &setup).await;
        let out = world.highwater(&["run", SYNC, "--json"]).await;
        assert_eq!(out.status.code(), Some(0), "{style:?}: {}", describe(&out));
        let pages = report(&out)["counters"]["pages"]
            .as_u64()
            .expect("pages in the report");
        assert!(pages >= 20, "{style:?}: {pages} pages");
        assert_eq!(
            world.sim.stats().source.requests,
            pages,
            "{style:?}: a page asked for twice"
        );
        world.assert_exact().await;
    }
}
