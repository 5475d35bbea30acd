"""The multi-task RL model's parts on tiny hand-made data: shapes, losses, steps, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys.data.interactions import Interactions
from recsys.models import build_model, load_model
from recsys.models.mtrl import losses as L
from recsys.models.mtrl.batches import collapse_sequence, encode_histories, make_windows, to_steps
from recsys.models.mtrl.config import PRESETS, make_config
from recsys.models.mtrl.model import MTRLNet, step_rows
from recsys.models.mtrl.train import adapt_config, to_batch, train

VIEW, CLICK, CART, BUY, RATE = range(5)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and spares a busy machine's other jobs."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def funnel_data(n_users: int = 40, n_items: int = 12, length: int = 8, seed: int = 0) -> Interactions:
    """Each user walks i -> i+1 (mod n_items) from a random start; every step is a view, some
    go on to click / cart / purchase, and some purchases are rated a little later."""
    rng = np.random.default_rng(seed)
    user, item, event, ts, rating = [], [], [], [], []
    for u in range(n_users):
        start, t = int(rng.integers(n_items)), 0
        for k in range(length):
            it = (start + k) % n_items
            stage = int(rng.choice(4, p=[0.4, 0.3, 0.1, 0.2]))
            for ev in range(stage + 1):
                user.append(u), item.append(it), event.append(ev), ts.append(t), rating.append(np.nan)
                t += 10_000_000
            if stage == BUY and rng.random() < 0.5:
                user.append(u), item.append(it), event.append(RATE), ts.append(t + 1), rating.append(float(rng.integers(1, 6)))
            t += 60_000_000
    n = len(user)
    return Interactions(
        np.array([f"u{u}" for u in range(n_users)]), np.array(user, np.int32), np.array(item, np.int32),
        np.array(event, np.int8), np.array(ts, np.int64), np.array(rating, np.float32), np.zeros(n, np.int8), n_items,
    )


def test_collapse_merges_funnel_and_attaches_late_ratings():
    items = np.array([3, 3, 3, 5, 3, 7])
    events = np.array([VIEW, CLICK, BUY, VIEW, RATE, RATE])
    ratings = np.array([np.nan] * 4 + [4.5, 2.0], np.float32)
    it, bt, t, r = collapse_sequence(items, events, np.arange(6), ratings)
    np.testing.assert_array_equal(it, [3, 5, 7])  # the rating of 3 labels its step; 7 is new
    np.testing.assert_array_equal(bt, [BUY, VIEW, RATE])
    np.testing.assert_array_equal(t, [0, 3, 5])
    assert r[0] == 4.5 and np.isnan(r[1]) and r[2] == 2.0


def test_windows_flags_by_hand():
    # one user, 5 steps of items 0..4; max_len 2, stride 2 -> input windows [2, 4) and [0, 2)
    data = Interactions(
        np.array(["a"]), np.zeros(5, np.int32), np.arange(5, dtype=np.int32), np.array([0, 1, 3, 0, 2], np.int8),
        np.arange(5, dtype=np.int64) * 1_000_000, np.full(5, np.nan, np.float32), np.zeros(5, np.int8), 5,
    )
    cfg = make_config()
    win = make_windows(to_steps(data), 2, 2, cfg.n_gap_buckets, cfg.rewards, 3.0, 2.0)
    np.testing.assert_array_equal(win.item, [[2, 3], [0, 1]])
    np.testing.assert_array_equal(win.target, [[3, 4], [1, 2]])
    np.testing.assert_allclose(win.reward, [[0.0, 0.5], [0.2, 1.0]])  # view, cart | click, purchase
    np.testing.assert_array_equal(win.done, [[False, True], [False, False]])  # item 4 is the last step
    np.testing.assert_array_equal(win.boot, [[True, False], [True, False]])  # next state inside the window
    np.testing.assert_array_equal(win.gap[1], [0, 2])  # first step unknown; 1 s -> 1 + floor(log2(1 + 1))


def _net_and_batch(preset="full", text_dim=8, **over):
    data = funnel_data()
    text = np.random.default_rng(1).normal(size=(data.n_items, text_dim)).astype(np.float32)
    cfg = make_config(preset, max_len=6, window_stride=6, d=16, n_heads=2, **over)
    steps = to_steps(data)
    win = make_windows(steps, cfg.max_len, cfg.window_stride, cfg.n_gap_buckets, cfg.rewards, 3.0, 2.0)
    cfg, _ = adapt_config(cfg, steps, win, text)
    torch.manual_seed(0)
    net = MTRLNet(cfg, data.n_items, text_dim)
    if net.text_proj is not None:
        net.text[:] = torch.from_numpy(text)
    batch = to_batch(win, np.arange(16), torch.device("cpu"), 0.0, np.random.default_rng(0))
    return net, batch, win


def test_shapes_and_every_head_trains_on_funnel_data():
    net, batch, _ = _net_and_batch()
    assert net.tasks == ("rank", "q", "behaviour", "rating")
    B, T = batch["item"].shape
    h = net.encode(batch["item"], batch["btype"], batch["gap"])
    assert h.shape == (B, T, 16)
    loss, parts = net(batch, target_net=net)
    assert set(parts) == {"rank", "q", "behaviour", "rating"}
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    loss.backward()
    for name in ("item_id.weight", "text_proj.weight", "q_proj.weight", "q_value.weight", "ctr.weight", "cvr.weight", "rate.weight"):
        assert net.get_parameter(name).grad.abs().sum() > 0, name
    for head in ("rank", "q", "blend"):
        scores = net.predict(batch["item"], batch["btype"], batch["gap"], batch["length"], head)
        assert scores.shape == (B, net.n_items)


def test_presets_switch_heads_off():
    assert set(PRESETS) == {"full", "no_text", "no_q", "no_behaviour", "no_memory", "sasrec_ce"}
    assert not make_config("sasrec_ce").memory and not make_config("no_memory").memory and make_config().memory
    net, batch, _ = _net_and_batch("sasrec_ce")
    assert net.tasks == ("rank",) and net.text_proj is None and net.behaviour is None
    _, parts = net(batch)
    assert set(parts) == {"rank"}
    net, _, _ = _net_and_batch("no_q")
    assert "q" not in net.tasks and net.q_proj is None


def test_loss_falls_on_a_tiny_dataset():
    data = funnel_data(n_users=60)
    cfg = make_config("full", max_len=8, d=32, max_epochs=12, batch_size=32, warmup_steps=5, dropout=0.1)
    art = train(cfg, data, progress=False)
    first, last = art.meta["history"][0], art.meta["history"][-1]
    assert last["loss_rank"] < first["loss_rank"] - 0.5
    assert last["loss_behaviour"] < first["loss_behaviour"]
    assert last["loss_rating"] < first["loss_rating"]


def test_td_target_by_hand():
    y = L.td_target(torch.tensor([1.0, 0.2]), torch.tensor([False, True]), torch.tensor([0.4, 0.5]), gamma=0.5)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 0.4, 0.2]))  # done: no bootstrap


def test_advantage_weights_by_hand():
    # advantages over the mean of {a} + negatives: +0.375, -0.25, -1.5 (1 + A clipped to 0); mean 1
    q_sa = torch.tensor([1.0, 0.0, -2.0])
    q_neg = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])
    raw = torch.tensor([1.375, 0.75, 0.0])
    torch.testing.assert_close(L.advantage_weights(q_sa, q_neg), raw / raw.mean())


def test_sa2c_weights_the_ranking_loss_the_model_reports():
    net, batch, _ = _net_and_batch(dropout=0.0)
    net.eval()
    torch.manual_seed(1)
    _, plain = net(batch, net)
    torch.manual_seed(1)
    _, weighted = net(batch, net, sa2c=True)
    torch.testing.assert_close(plain["q"], weighted["q"])  # same negatives drawn, same Q loss
    assert abs(float(plain["rank"]) - float(weighted["rank"])) > 1e-4  # only the ranking loss moved


def test_model_td_targets_are_double_q_with_a_distinct_target_network():
    """V(s') = Q_target(s', argmax_a Q_online(s', a)): the online network picks the action, the
    target network (here: different weights) values it, which is not the target's own max."""
    import copy

    net, batch, _ = _net_and_batch()
    target = copy.deepcopy(net)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    net.eval(), target.eval()
    with torch.no_grad():
        table = net.item_table()
        h = net.encode(batch["item"], batch["btype"], batch["gap"], table)
        qh = net.q_proj(h)
        v = net._target_values(batch, qh, table, target)
        b = 0  # first window; its position 1 is the next state of position 0
        a_star = int((qh[b, 1] @ table.T).argmax())  # the online network's choice
        t_h = target.encode(batch["item"], batch["btype"], batch["gap"])
        t_q = target.q_value(t_h[b, 1]) + target.q_proj(t_h[b, 1]) @ target.item_table().T  # (I,) Q_target(s', .)
        lo, hi = float(net.q_range[0]), float(net.q_range[1])
        double_q = float(t_q[a_star].clamp(lo, hi))
        max_q = float(t_q.max().clamp(lo, hi))
    assert bool(batch["boot"][b, 0])
    assert lo < double_q < max_q < hi  # inside the clip range: the values themselves are compared
    assert v[b, 1].item() == pytest.approx(double_q, rel=1e-5)  # the data tells double Q from max-Q


def test_esmm_probability_identity():
    a, c = torch.randn(50), torch.randn(50)
    p_ctr, p_cvr, p_ctcvr = L.esmm(a, c)
    torch.testing.assert_close(p_ctcvr, p_ctr * p_cvr)
    assert torch.all(p_ctcvr <= p_ctr)
    click, buy = torch.rand(50) < 0.5, torch.zeros(50, dtype=torch.bool)
    buy[:5] = click[:5]
    got = L.esmm_loss(a, c, click, buy, torch.ones(50, dtype=torch.bool))
    bce = torch.nn.functional.binary_cross_entropy
    want = bce(p_ctr, click.float()) + bce(p_ctcvr, buy.float())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_sampled_softmax_is_used_for_large_catalogues_and_learns():
    data = funnel_data(n_users=60)
    cfg = make_config("sasrec_ce", max_len=8, d=32, max_epochs=10, batch_size=32, full_softmax_max_items=5, n_sampled=6, warmup_steps=5)
    art = train(cfg, data, progress=False)
    hist = art.meta["history"]
    assert hist[-1]["loss_rank"] < hist[0]["loss_rank"]


def test_a_large_catalogues_step_reads_only_its_rows_and_loses_as_on_the_whole_table():
    # 12 items above a threshold of 5: sampled; no dropout, so the losses are deterministic
    net, batch, _ = _net_and_batch("full", full_softmax_max_items=5, n_sampled=4, q_negatives=3, dropout=0.0, id_dropout=0.0)
    net.eval()
    net.sample_p[:] = torch.linspace(1, 2, net.n_items) / torch.linspace(1, 2, net.n_items).sum()
    torch.manual_seed(5)
    _, parts = net(batch, target_net=net)
    torch.manual_seed(5)
    neg = torch.multinomial(net.sample_p, 4, replacement=True)
    q_neg = torch.multinomial(net.sample_p, 3, replacement=True)
    rows, renumbered, r_neg, r_q_neg = step_rows(batch, neg, q_neg)
    assert torch.equal(rows[r_neg], neg) and torch.equal(rows[r_q_neg], q_neg) and len(rows) <= net.n_items
    assert torch.equal(rows[renumbered["item"]], batch["item"])
    m = batch["target"] >= 0
    assert torch.equal(renumbered["target"] < 0, ~m) and torch.equal(rows[renumbered["target"][m]], batch["target"][m])
    torch.testing.assert_close(net.item_table(rows=rows), net.item_table()[rows])
    # the ranking loss as the whole table gives it, the same negatives
    with torch.no_grad():
        table = net.item_table()
        hs = net.encode(batch["item"], batch["btype"], batch["gap"], table)[m]
        want = L.sampled_ce(hs, table, batch["target"][m], neg, net.sample_p.log()).mean()
    torch.testing.assert_close(parts["rank"], want)
    assert all(torch.isfinite(v) for v in parts.values()) and set(parts) == {"rank", "q", "behaviour", "rating"}


def test_sampled_ce_masks_accidental_hits_and_matches_full_softmax_with_uniform_proposal():
    h, table = torch.randn(4, 8), torch.randn(6, 8)
    target = torch.tensor([0, 1, 2, 3])
    neg = torch.arange(6)  # every item once, uniform proposal: equals the full softmax
    log_q = torch.full((6,), -np.log(6.0))
    torch.testing.assert_close(L.sampled_ce(h, table, target, neg, log_q), L.ranking_ce(h, table, target))


def test_ranking_ce_over_allowed_items_is_the_softmax_with_the_others_masked():
    h, table = torch.randn(5, 8, requires_grad=True), torch.randn(7, 8, requires_grad=True)
    target = torch.tensor([0, 2, 3, 6, 2])
    allowed = torch.tensor([True, False, True, True, False, False, True])
    got = L.ranking_ce(h, table, target, allowed)
    got.sum().backward()
    grads = h.grad.clone(), table.grad.clone()
    h.grad, table.grad = None, None
    want = torch.nn.functional.cross_entropy((h @ table.T).masked_fill(~allowed, float("-inf")), target, reduction="none")
    want.sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grads, (h.grad, table.grad))
    assert (grads[1][~allowed] == 0).all()  # a left-out item is never pushed down
    torch.testing.assert_close(L.ranking_ce(h, table, target, torch.ones(7, dtype=torch.bool)), L.ranking_ce(h, table, target))


def test_checkpoint_round_trip(tmp_path):
    data = funnel_data()
    text = np.random.default_rng(2).normal(size=(data.n_items, 8)).astype(np.float32)
    np.save(tmp_path / "text.npy", text)
    model = build_model("mtrl", text_path=str(tmp_path / "text.npy"), max_len=6, d=16, max_epochs=2)
    model.fit(data)
    model.save(tmp_path / "m")
    again = load_model(tmp_path / "m")
    hist = [np.array([0, 1, 2]), np.array([5])]
    np.testing.assert_array_equal(model.score(hist), again.score(hist))
    np.testing.assert_array_equal(model.score_events(hist, [np.array([0, 1, 3]), np.array([0])]), again.score_events(hist, [np.array([0, 1, 3]), np.array([0])]))
    assert again.meta["step"] == model.meta["step"] > 0
    assert again.meta["fingerprint"] == model.meta["fingerprint"]
    assert again.cfg == model.net.cfg and again.net.n_items == data.n_items


def test_cold_start_item_comes_from_its_text(tmp_path):
    data = funnel_data()
    text = np.random.default_rng(3).normal(size=(data.n_items + 2, 8)).astype(np.float32)
    model = build_model("mtrl", max_len=6, d=16, max_epochs=2)
    np.save(tmp_path / "t.npy", text[: data.n_items])
    model.text_path = str(tmp_path / "t.npy")
    model.fit(data)
    model.set_item_text(text)  # two items newer than the model
    net = model.net
    assert net.n_items == data.n_items + 2
    with torch.no_grad():
        table = net.item_table()
        from_text = net.text_proj(torch.from_numpy(text[-2:]))
    assert table[-2:].abs().sum() > 0
    torch.testing.assert_close(table[-2:], from_text)  # no id part: the text alone
    assert model.score([np.array([0, 1])]).shape == (1, data.n_items + 2)
    # an id-only model has nothing for an unseen item
    plain = build_model("mtrl", preset="no_text", max_len=6, d=16, max_epochs=1).fit(data)
    plain.net.grow_items(data.n_items + 1)
    assert plain.net.item_table()[-1].abs().sum() == 0


def test_serving_histories_collapse_repeats_and_keep_the_last_steps():
    items, btype, gap, length = encode_histories([np.array([4, 4, 4, 5, 6, 7]), np.array([], np.int64)], None, None, 0, 3, 8)
    np.testing.assert_array_equal(items, [[5, 6, 7], [0, 0, 0]])
    np.testing.assert_array_equal(length, [3, 1])
    assert not gap.any()


def test_a_history_scores_the_same_beside_longer_or_shorter_ones():
    # Serving cuts each block to its longest history (causal attention, right padding): a user's
    # scores must not depend on who shares the block.
    from recsys.models.mtrl.blend import network_parts

    net, _, _ = _net_and_batch()
    net.eval()
    short, long = np.array([3, 4]), np.array([1, 2, 3, 4, 5, 6])
    together = network_parts(net, [short, long], 0)
    for i, h in enumerate((short, long)):
        alone = network_parts(net, [h], 0)
        for name in together:
            np.testing.assert_allclose(together[name][i], alone[name][0], rtol=1e-5, atol=1e-5)


def test_constant_labels_switch_heads_off_and_say_so():
    data = funnel_data()
    plain = Interactions(data.user_ids, data.user, data.item, np.full(len(data.item), BUY, np.int8), data.ts, np.full(len(data.item), np.nan, np.float32), data.split, data.n_items)
    cfg = make_config()
    steps = to_steps(plain)
    win = make_windows(steps, cfg.max_len, cfg.window_stride, cfg.n_gap_buckets, cfg.rewards, 3.0, 2.0)
    eff, notes = adapt_config(cfg, steps, win, None)
    assert eff.item_repr == "id" and not eff.behaviour_heads and not eff.rating_head and eff.q_head
    assert len(notes) == 4


def test_uncertainty_weighting_learns_weights():
    net, batch, _ = _net_and_batch(weighting="uncertainty")
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(5):
        loss, _ = net(batch, net)
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = net.task_weights.weights()
    assert set(w) == {"rank", "q", "behaviour", "rating"} and len(set(w.values())) > 1


def test_every_score_head_is_factorised_for_the_scoring_fast_path():
    from recsys.scoring import is_factorised
    from tests.helpers import assert_top_k_follows_scores

    data = funnel_data()
    # the network's own scores (no item memory mixed in: tests/test_mtrl_memory.py)
    model = build_model("mtrl", max_len=6, d=16, max_epochs=1, memory=False).fit(data)
    hist = [np.array([0, 1, 2]), np.array([5]), np.array([], np.int64)]
    assert is_factorised(model)
    for head in ("rank", "q", "blend"):
        model.net.cfg = make_config(**{**model.net.cfg.to_dict(), "score_head": head})
        direct = model.score(hist)
        np.testing.assert_allclose(direct, model.user_vectors(hist) @ model.item_vectors().T, rtol=1e-5, atol=1e-5)
        assert_top_k_follows_scores(model, hist, direct)
