"""Distillation: a big model (the teacher) teaches a small one (the student) with its whole next-token
distribution, not only the right token.

    from tinylm.distill import DistillConfig, distill_setup, TeacherInfo
    from tinylm.train.session import run_training       # or tinylm.train.train(..., objective=Distill(...))
    run_training({"data": "story.txt", "out_dir": "runs/student"}, {"preset": "stories260K"},
                 setup=distill_setup(TeacherInfo.read("runs/teacher/best"), DistillConfig(alpha=0.5)))

loss = (1 - alpha) CE(labels) + alpha T^2 D(teacher_T, student_T)   (objective.py; the divergences
forward/reverse KL and generalized JSD are in tinylm.train.objectives). The teacher runs live
(teacher.py) or is read from a cache of its top-k logits written once (cache.py; its truncation is
declared in cache.TRUNCATION). `tinylm distill` is session.run_distill.
"""

from tinylm.distill.cache import TRUNCATION, TeacherCache, WithTeacher, dense_logits, open_cache, write_cache
from tinylm.distill.objective import Distill, DistillConfig
from tinylm.distill.session import distill_setup, run_distill
from tinylm.distill.teacher import LiveTeacher, TeacherInfo, check_context, common_vocab

__all__ = [
    "TRUNCATION",
    "Distill",
    "DistillConfig",
    "LiveTeacher",
    "TeacherCache",
    "TeacherInfo",
    "WithTeacher",
    "check_context",
    "common_vocab",
    "dense_logits",
    "distill_setup",
    "open_cache",
    "run_distill",
    "write_cache",
]
