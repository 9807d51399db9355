"""The THA4 teacher: upstream's five networks and the posers built from them."""
from tha.models.teacher.load import (load_teacher_image, load_teacher_network, load_teacher_poser,
                                     write_teacher_directory)
from tha.models.teacher.networks import FACE_NETWORKS, NETWORKS
from tha.models.teacher.poser import FaceTeacherPoser, TeacherPoser
from tha.models.teacher.weights import deterministic_state_dict, load_manifest

__all__ = [
    "FACE_NETWORKS", "NETWORKS", "FaceTeacherPoser", "TeacherPoser", "deterministic_state_dict",
    "load_manifest", "load_teacher_image", "load_teacher_network", "load_teacher_poser", "write_teacher_directory",
]
