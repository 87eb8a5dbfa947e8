"""MAML: the inner step and the meta-gradient against closed forms (second order, first order, Meta-SGD), the task
datamodules (N-way K-shot tasks from disjoint classes, rotations, Lake's runs, sinusoids, determinism), training
on sinusoids and digits, batch norm, and the command line (DDP against one process, resume, bf16, bad input)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from torch import nn

from datamodules import DataError, Digits, Episodes, Omniglot, Sinusoid
from datamodules.episodes import TaskSampler
from lightning_gen import MAML
from lightning_gen.core.checks import ConfigError
from lightning_gen.core.protocols import EpisodicData
from lightning_gen.maml import adapt, over_tasks, task_loss
from lightning_gen.nn.maml import ConvNet, SineMLP, has_running_stats
from tests.conftest import QUIET, ROOT, run_cli, shared_data

TINY = str(ROOT / "configs" / "maml" / "tiny.yaml")
SAVE_METRICS = "--trainer.callbacks+=tests.helpers.SaveTestMetrics"


def digits_tasks(**kwargs) -> Episodes:
    options = dict(ways=3, shots=1, queries=3, val_classes=3, test_classes=3, meta_batch_size=4, batches_per_epoch=10,
                   val_tasks=20, test_tasks=30, eval_batch_size=30)
    data = Episodes(Digits(), **{**options, **kwargs})
    data.setup("fit")
    return data


def trainer(**kwargs) -> L.Trainer:
    options = dict(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, accelerator="cpu", devices=1)
    return L.Trainer(**{**options, **kwargs})


# ---- the algorithm against closed forms -----------------------------------------------------------------------


def quadratic_task(seed: int = 0):
    """A linear model w (no bias) with the MSE loss: L(w) = mean((X w - y)^2) = w'Aw - 2b'w + c, A = X'X / n,
    b = X'y / n, so grad L = 2 (A w - b) and the Hessian is 2A."""
    g = torch.Generator().manual_seed(seed)
    xs, ys, xq, yq = torch.randn(5, 3, generator=g), torch.randn(5, 1, generator=g), torch.randn(7, 3, generator=g), \
        torch.randn(7, 1, generator=g)
    net = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.randn(1, 3, generator=g))
    return net, xs, ys, xq, yq


def test_one_inner_step_is_the_sgd_step():
    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), ways=3, filters=4)
    x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    weights = dict(net.named_parameters())
    fast = adapt(net, weights, {k: 0.3 for k in weights}, x, y, steps=1)
    grads = torch.autograd.grad(task_loss(net(x), y), list(weights.values()))
    for (name, w), g in zip(weights.items(), grads):
        torch.testing.assert_close(fast[name], w - 0.3 * g)
    two = adapt(net, weights, {k: 0.3 for k in weights}, x, y, steps=2)
    again = adapt(net, fast, {k: 0.3 for k in weights}, x, y, steps=1)
    for name in weights:
        torch.testing.assert_close(two[name], again[name])


def test_meta_gradient_is_the_closed_form_and_first_order_drops_the_hessian_term():
    """One inner step w' = w - a grad L_s(w); d L_q(w') / dw = (I - a H_s) grad L_q(w'); FOMAML: grad L_q(w')."""
    net, xs, ys, xq, yq = quadratic_task()
    alpha = 0.1
    w = net.weight.detach().flatten()
    a_s, b_s = xs.T @ xs / 5, xs.T @ ys.flatten() / 5
    a_q, b_q = xq.T @ xq / 7, xq.T @ yq.flatten() / 7
    w_fast = w - alpha * 2 * (a_s @ w - b_s)
    query_grad = 2 * (a_q @ w_fast - b_q)
    hessian = 2 * a_s
    found = {}
    for first_order in (False, True):
        weights = dict(net.named_parameters())
        fast = adapt(net, weights, {"weight": alpha}, xs, ys, 1, first_order)
        (found[first_order],) = torch.autograd.grad(task_loss(nn.functional.linear(xq, fast["weight"]), yq),
                                                    [net.weight])
    torch.testing.assert_close(found[False].flatten(), (torch.eye(3) - alpha * hessian) @ query_grad)
    torch.testing.assert_close(found[True].flatten(), query_grad)
    torch.testing.assert_close((found[False] - found[True]).flatten(), -alpha * hessian @ query_grad)
    # a finite difference of the whole meta-objective agrees with the second-order gradient
    def meta_objective(v):
        fast = v - alpha * 2 * (a_s.double() @ v - b_s.double())
        return ((xq.double() @ fast - yq.flatten().double()) ** 2).mean()
    eps, v = 1e-6, w.double()
    numeric = torch.stack([(meta_objective(v + eps * e) - meta_objective(v - eps * e)) / (2 * eps)
                           for e in torch.eye(3, dtype=torch.float64)])
    torch.testing.assert_close(found[False].flatten().double(), numeric, atol=1e-5, rtol=1e-4)


def test_meta_sgd_rate_gradient_and_two_steps_against_finite_differences():
    """With a learned rate per weight element, d L_q(w - a o g) / da = -g o grad L_q(w'). Two inner steps on the
    conv net with batch norm (float64): the meta-gradient agrees with central finite differences."""
    net, xs, ys, xq, yq = quadratic_task(1)
    rate = nn.Parameter(torch.full_like(net.weight, 0.1))
    weights = dict(net.named_parameters())
    fast = adapt(net, weights, {"weight": rate}, xs, ys, 1)
    (rate_grad,) = torch.autograd.grad(task_loss(nn.functional.linear(xq, fast["weight"]), yq), [rate])
    w = net.weight.detach().flatten()
    g = 2 * (xs.T @ xs / 5 @ w - xs.T @ ys.flatten() / 5)
    w_fast = w - 0.1 * g
    torch.testing.assert_close(rate_grad.flatten(), -g * 2 * (xq.T @ xq / 7 @ w_fast - xq.T @ yq.flatten() / 7))

    torch.manual_seed(0)
    net = ConvNet((1, 8, 8), ways=3, filters=4).double()
    sx, qx = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.randn(6, 1, 8, 8, dtype=torch.float64)
    sy, qy = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2, 2, 1, 0])

    def meta_loss() -> torch.Tensor:
        fast = adapt(net, dict(net.named_parameters()), {k: 0.4 for k, _ in net.named_parameters()}, sx, sy, 2)
        return nn.functional.cross_entropy(torch.func.functional_call(net, fast, (qx,)).double(), qy)

    weight = net.features[0][0].weight
    (analytic,) = torch.autograd.grad(meta_loss(), [weight])
    eps = 1e-6
    with torch.no_grad():
        for index in [(0, 0, 0, 0), (2, 0, 1, 2), (3, 0, 2, 1)]:
            weight[index] += eps
            up = meta_loss()
            weight[index] -= 2 * eps
            down = meta_loss()
            weight[index] += eps
            assert analytic[index].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-4, abs=1e-7)


def test_meta_sgd_learns_its_rates_and_a_checkpoint_keeps_them(tmp_path):
    L.seed_everything(0)
    model = MAML(filters=8, learn_inner_lr=True, inner_lr=0.3, outer_lr=0.01)
    fit = trainer(max_epochs=1, default_root_dir=tmp_path)
    fit.fit(model, digits_tasks())
    rates = dict(model.inner_lrs.items())
    assert {k.replace("__", ".") for k in rates} == {name for name, _ in model.net.named_parameters()}
    for name, w in model.net.named_parameters():
        assert rates[name.replace(".", "__")].shape == w.shape
    changed = torch.cat([(r - 0.3).abs().flatten() for r in rates.values()])
    assert changed.max() > 1e-3 and (changed > 0).float().mean() > 0.5
    fit.save_checkpoint(tmp_path / "meta_sgd.ckpt")
    loaded = MAML.load_from_checkpoint(tmp_path / "meta_sgd.ckpt")  # no data: the shapes are in the hparams
    for k, r in rates.items():
        torch.testing.assert_close(loaded.inner_lrs[k], r)


# ---- the tasks -----------------------------------------------------------------------------------------------


def test_episodes_draw_n_classes_of_k_plus_queries_from_disjoint_splits_deterministically():
    data = digits_tasks(ways=3, shots=2, queries=4, eval_queries=5)
    assert isinstance(data, EpisodicData) and data.image_shape == (1, 8, 8)
    splits = data.class_splits
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == list(range(10))
    assert len(splits["val"]) == len(splits["test"]) == 3
    for split, queries in (("train", 4), ("val", 5), ("test", 5)):
        sx, sy, qx, qy = data.maker.make(split, 7)
        assert sx.shape == (6, 1, 8, 8) and qx.shape == (3 * queries, 1, 8, 8)
        assert torch.equal(torch.cat([sy, qy]), torch.cat([torch.arange(3).repeat_interleave(2),
                                                          torch.arange(3).repeat_interleave(queries)]))
        images = torch.cat([sx, qx])
        assert len(torch.unique(images.flatten(1), dim=0)) == len(images)  # distinct images
        same = data.maker.make(split, 7)
        assert all(torch.equal(a, b) for a, b in zip((sx, sy, qx, qy), same))  # a function of (seed, split, index)
    assert not torch.equal(data.maker.make("train", 7)[0], data.maker.make("train", 8)[0])
    other = digits_tasks(seed=1)
    assert not torch.equal(other.maker.make("test", 7)[0], data.maker.make("test", 7)[0])
    # the classes a split's tasks come from are only its own
    for split in ("train", "val", "test"):
        pool = data.maker.source
        for members, _ in data.maker.classes[split]:
            assert {int(pool[int(i)][1]) for i in members[:5]} <= set(splits[split])


def test_training_tasks_continue_across_epochs_and_processes_share_the_meta_batch():
    one = TaskSampler(12)
    one.set_epoch(1)
    assert list(one) == list(range(12, 24))
    ranks = []
    for rank in range(2):
        sampler = TaskSampler(12)
        sampler.num_replicas, sampler.rank = 2, rank
        ranks.append(list(sampler))
    assert len(ranks[0]) == 6 and sorted(ranks[0] + ranks[1]) == list(range(12))
    # a batch of 2 tasks on each of 2 processes holds the tasks of one process's batch of 4
    assert sorted(ranks[0][:2] + ranks[1][:2]) == [0, 1, 2, 3]


def test_omniglot_rotations_turn_only_meta_train_characters_and_lakes_runs_are_tasks():
    shared_data("omniglot")
    data = Episodes(Omniglot(val_characters=0), ways=20, shots=1, queries=1, eval_queries=2, val_classes=20,
                    test_classes=40, rotations=True, val_tasks=2, test_tasks=2)
    data.setup("fit")
    splits = data.class_splits
    assert len(splits["train"]) == 182 and not set(splits["train"]) & set(splits["test"] + splits["val"])
    train = data.maker.classes["train"]
    assert len(train) == 4 * 182 and {k for _, k in train} == {0, 1, 2, 3}
    assert {k for _, k in data.maker.classes["test"]} == {0} and len(data.maker.classes["test"]) == 40
    held_out_items = set(torch.cat([m for m, _ in data.maker.classes["test"] + data.maker.classes["val"]]).tolist())
    assert not held_out_items & set(torch.cat([m for m, _ in train]).tolist())  # no turned copy of a test character
    members, turns = next((m, k) for m, k in train if k == 1)
    first = data.maker.source[int(members[0])][0]
    sx = data.maker.make("train", 0)[0]
    assert sx.shape == (20, 1, 28, 28) and torch.equal(torch.rot90(torch.rot90(first, 1, (1, 2)), 3, (1, 2)), first)
    runs = Episodes(Omniglot(val_characters=0), ways=20, shots=1, queries=1, test_set="lake_runs")
    runs.setup("test")
    tasks = list(runs.test_dataloader())
    sx, sy, qx, qy = (torch.cat(t) for t in zip(*tasks))
    assert runs.test_tasks == 20 and sx.shape == (20, 20, 1, 28, 28) and qx.shape == (20, 20, 1, 28, 28)
    assert torch.equal(sy, torch.arange(20).expand(20, 20))
    assert all(sorted(q.tolist()) == list(range(20)) for q in qy)  # each run: one test image per character
    with pytest.raises(DataError, match="turn Omniglot's `rotations` off"):
        Episodes(Omniglot(rotations=True))


def test_sinusoid_tasks_are_the_papers_and_fixed_by_seed():
    data = Sinusoid(shots=5, queries=7, eval_queries=50)
    assert isinstance(data, EpisodicData) and data.ways is None
    for index in range(50):
        amplitude, phase = data.maker.wave("train", index)
        assert 0.1 <= amplitude <= 5 and 0 <= phase <= torch.pi
        sx, sy, qx, qy = data.maker.make("train", index)
        assert sx.shape == (5, 1) and qx.shape == (7, 1) and sx.abs().max() <= 5
        torch.testing.assert_close(torch.cat([sy, qy]), amplitude * torch.sin(torch.cat([sx, qx]) - phase))
    assert data.maker.make("test", 3)[2].shape == (50, 1)
    assert torch.equal(Sinusoid(seed=0).maker.make("val", 1)[1], Sinusoid(seed=0).maker.make("val", 1)[1])
    assert not torch.equal(Sinusoid(seed=0).maker.make("val", 1)[1], Sinusoid(seed=1).maker.make("val", 1)[1])
    sx, sy, qx, qy = next(iter(data.test_dataloader()))
    assert sx.shape == (25, 5, 1) and qx.shape == (25, 50, 1)


# ---- training ----------------------------------------------------------------------------------------------


def test_training_reduces_the_query_loss_on_sinusoids():
    L.seed_everything(0)
    data = Sinusoid(shots=10, queries=10, meta_batch_size=5, batches_per_epoch=200)
    model = MAML(inner_lr=0.01, eval_inner_steps=10, outer_lr=0.01)
    run = trainer()
    tasks = next(iter(Sinusoid(test_tasks=50, eval_batch_size=50).test_dataloader()))
    model.hparams.task = "regression"  # built now (the trainer would take it from the data), to score it untrained
    model.configure_model()
    before = over_tasks(model.score_task, *tasks).mean(0)  # MSE after 0, 1, 10 steps
    run.fit(model, data)
    after = over_tasks(model.score_task, *tasks).mean(0)
    assert model.report_steps() == [0, 1, 10]
    assert after[1] < 0.6 * before[1] and after[2] < 0.5 * before[2] and after[2] < after[1], (before, after)


def test_training_reduces_the_query_loss_on_new_digits_and_bf16_mixed_trains():
    """5-way 1-shot tasks of 5 digits, meta-tested on tasks of the 5 others: after 30 meta-updates the adapted
    weights' query loss on the held-out tasks is lower and their accuracy higher; the same in bf16-mixed."""
    data = digits_tasks(ways=5, val_classes=0, test_classes=5, val_tasks=0)
    tasks = next(iter(data.test_dataloader()))  # 30 tasks of the 5 digits never trained on

    def held_out(model: MAML) -> tuple[float, float]:
        def loss(sx, sy, qx, qy):
            with torch.no_grad():
                return task_loss(model.run(model.adapt(sx, sy, 3), qx), qy)
        return over_tasks(model.score_task, *tasks).mean().item(), over_tasks(loss, *tasks).mean().item()

    for precision in ("32-true", "bf16-mixed"):
        L.seed_everything(0)
        model = MAML(filters=16, outer_lr=0.01, ways=5, image_shape=(1, 8, 8), task="classification")
        model.configure_model()
        accuracy, loss = held_out(model)
        run = trainer(max_epochs=3, precision=precision, log_every_n_steps=1)
        run.fit(model, data)
        assert torch.isfinite(run.callback_metrics["train/loss"])
        trained_accuracy, trained_loss = held_out(model)
        assert trained_loss < 0.9 * loss and trained_accuracy > accuracy, (precision, accuracy, loss,
                                                                            trained_accuracy, trained_loss)


def test_transductive_batch_norm_and_what_running_statistics_in_eval_mode_do_wrong():
    """The paper's batch norm normalises each task's batch by its own statistics, so a task's predictions depend on
    that task alone. PyTorch's default batch norm keeps running statistics, which `eval()` uses instead: they were
    gathered over other tasks' batches (and over the initial weights, not the adapted ones), so the same task gets
    other predictions depending on which tasks came before, and the accuracy falls."""
    L.seed_everything(0)
    data = digits_tasks(val_tasks=0)
    model = MAML(filters=16, outer_lr=0.003)
    trainer(max_epochs=3).fit(model, data)
    assert not has_running_stats(model.net)
    tasks = next(iter(data.test_dataloader()))
    transductive = over_tasks(model.score_task, *tasks)

    running = ConvNet((1, 8, 8), 3, 16, running_stats=True)
    running.load_state_dict(model.net.state_dict(), strict=False)  # same weights, plus running statistics
    assert has_running_stats(running)

    def eval_mode_accuracy(seen_tasks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Running statistics gathered the usual way (training mode over `seen_tasks` meta-train batches), then a
        meta-test in `eval()` mode: adapt and predict with those statistics."""
        for m in running.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a plain average over the batches seen
        running.train()
        with torch.no_grad():
            for i in range(seen_tasks):
                sx, _, qx, _ = data.maker.make("train", i)
                running(torch.cat([sx, qx]))
        running.eval()
        weights = dict(running.named_parameters())
        rates = {k: 0.4 for k in weights}
        accuracies, outputs = [], []
        for sx, sy, qx, qy in zip(*tasks):
            with torch.no_grad():
                out = torch.func.functional_call(running, adapt(running, weights, rates, sx, sy, 3), (qx,))
            outputs.append(out)
            accuracies.append((out.argmax(1) == qy).float().mean())
        return torch.stack(accuracies), torch.stack(outputs)

    few, few_out = eval_mode_accuracy(1)
    many, many_out = eval_mode_accuracy(40)
    assert not torch.allclose(few_out, many_out, atol=1e-3)  # a task's predictions depend on the other tasks
    # transductive: a task's predictions are the same alone or in any meta-batch
    alone = model.score_task(*(t[0] for t in tasks))
    assert alone == transductive[0]
    assert transductive.mean() > many.mean() + 0.05 and transductive.mean() > few.mean() + 0.05, \
        (transductive.mean(), many.mean(), few.mean())


# ---- the command line: DDP, resume, bad input ----------------------------------------------------------------


def tiny_tasks(**kwargs) -> Episodes:
    """The data of configs/maml/tiny.yaml."""
    options = dict(ways=3, shots=1, queries=3, val_classes=3, test_classes=3, meta_batch_size=4, batches_per_epoch=4,
                   val_tasks=8, test_tasks=8, eval_batch_size=4)
    return Episodes(Digits(), **{**options, **kwargs})


def tiny_maml() -> MAML:
    """The model of configs/maml/tiny.yaml."""
    return MAML(inner_lr=0.4, inner_steps=1, eval_inner_steps=3, outer_lr=0.003, filters=16)


@pytest.mark.slow
def test_ddp_trains_like_one_process_and_tests_like_one_process_and_resume_continues(tmp_path):
    """The meta-batch of 4 tasks is split 2 + 2 over two processes and DDP averages the meta-gradient: the same
    weights as one process (batch norm is per task). Testing 7 tasks in batches of 2 on two processes (the sampler
    repeats one) gives one process's mean and interval. A resumed fit continues from where it stopped."""
    args = ["--config", TINY, "--trainer.logger", "false", *QUIET]
    ddp = run_cli(["fit", *args, "--trainer.default_root_dir", "ddp", "--trainer.devices", "2", "--trainer.strategy",
                   "ddp", "--trainer.callbacks+=tests.helpers.SameWeightsCheck"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    ckpt = tmp_path / "ddp" / "checkpoints" / "last.ckpt"
    test = run_cli(["test", *args, "--ckpt_path", str(ckpt), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                    "--data.test_tasks", "7", "--data.eval_batch_size", "2", "--trainer.default_root_dir", "test",
                    SAVE_METRICS], tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test: 3-way accuracy over 7 tasks" in test.stdout + test.stderr
    two = json.loads((tmp_path / "test" / "test_metrics.json").read_text())

    L.seed_everything(0)  # one process, as the config runs it
    model, data = tiny_maml(), tiny_tasks()
    trainer(max_epochs=2, limit_val_batches=None, default_root_dir=tmp_path / "one").fit(model, data)
    saved = torch.load(ckpt, weights_only=True)
    assert saved["global_step"] == 8
    for key, value in model.state_dict().items():
        torch.testing.assert_close(saved["state_dict"][key], value, atol=1e-4, rtol=1e-3)
    one = trainer().test(MAML.load_from_checkpoint(ckpt), tiny_tasks(test_tasks=7, eval_batch_size=2))[0]
    for key in ("test/accuracy", "test/accuracy_ci95"):
        assert one[key] == pytest.approx(two[key], abs=1e-6), key

    resume = trainer(max_epochs=3, enable_checkpointing=True, default_root_dir=tmp_path / "resumed")
    resumed = tiny_maml()
    resume.fit(resumed, tiny_tasks(), ckpt_path=ckpt)
    assert resume.global_step == 12  # one more epoch of 4 meta-batches, from where it stopped
    assert not torch.equal(resumed.net.head.weight, model.net.head.weight)


def test_bad_input_names_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"ways=4 is more than the 3 meta-test classes of Digits \(test_classes\). Use "
                                        r"at most 3 ways, or give the split more classes"):
        digits_tasks(ways=4)
    with pytest.raises(DataError, match=r"ways=4 is more than the 2 meta-val classes of Digits \(val_classes\)"):
        digits_tasks(ways=4, test_classes=4, val_classes=2)
    with pytest.raises(DataError, match=r"ways=6 is more than the 4 meta-train classes of Digits \(the rest\)"):
        digits_tasks(ways=6, val_tasks=0, test_classes=6, val_classes=0)
    with pytest.raises(DataError, match=r"shots \+ queries = 100 \+ 100 is more than the 1.. images of the smallest "
                                        r"meta-test class of Digits. Use shots \+ queries <= 1.."):
        digits_tasks(shots=100, queries=100)
    with pytest.raises(DataError, match="hold out 10 of Digits's 10 classes, leaving none to meta-train on"):
        digits_tasks(val_classes=5, test_classes=5)
    with pytest.raises(DataError, match=r"test_set=lake_runs holds Lake et al.'s 20-way 1-shot runs, but the tasks "
                                        r"are 5-way 1-shot: use `--data.ways 20 --data.shots 1`"):
        Episodes(Digits(), ways=5, test_set="lake_runs")
    with pytest.raises(DataError, match="test_set=lake_runs needs Omniglot"):
        Episodes(Digits(), ways=20, shots=1, test_set="lake_runs", val_classes=0, test_classes=0,
                 val_tasks=0).setup("test")
    with pytest.raises(DataError, match="meta_batch_size=5 cannot be split over 2 processes: use a multiple of 2"):
        data = digits_tasks(meta_batch_size=5)
        data._world = lambda: 2
        data.train_dataloader()
    with pytest.raises(DataError, match="images_background_small1.zip is missing: Omniglot needs the zip files"):
        Episodes(Omniglot(root=str(tmp_path))).setup("fit")
    with pytest.raises(ConfigError, match="inner_steps and eval_inner_steps must be 0 or more"):
        MAML(inner_steps=-1)
    with pytest.raises(ConfigError, match=r"^inner_lr must be a learning rate of 0 or more"):
        MAML(inner_lr=-0.1)
    with pytest.raises(ConfigError, match=r"MAML trains on few-shot tasks, and Digits gives plain batches: wrap "
                                          r"labeled images in `datamodules.Episodes` \(`--data Episodes --data.data "
                                          r"Digits`\)"):
        trainer().fit(MAML(), Digits())
    run = trainer(default_root_dir=tmp_path)  # a checkpoint of 3-way tasks, tested on 2-way ones
    run.fit(tiny_maml(), tiny_tasks(batches_per_epoch=1))
    run.save_checkpoint(tmp_path / "three.ckpt")
    with pytest.raises(ConfigError, match=r"the checkpoint holds MAML for 3-way classification tasks but the data "
                                          r"makes 2-way classification tasks: give the data `--data.ways 3`"):
        trainer().test(tiny_maml(), tiny_tasks(ways=2), ckpt_path=tmp_path / "three.ckpt")


def test_networks_follow_the_paper():
    net = ConvNet((1, 28, 28), ways=5)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4 and all(c.out_channels == 64 and c.kernel_size == (3, 3) and c.stride == (2, 2)
                                   for c in convs)
    assert net.features(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 2, 2)  # 28 -> 14 -> 7 -> 4 -> 2
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 5)
    assert ConvNet((1, 28, 28), 5, pool="max").features(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 2, 2)
    mlp = SineMLP()
    assert [m.out_features for m in mlp.modules() if isinstance(m, nn.Linear)] == [40, 40, 1]
