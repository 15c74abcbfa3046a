"""Merging VOC boxes with roLabelImg oriented boxes: by order + class, else by best IoU."""
from tinyloop.ingest import import_dataset
from tests.fixtures_formats import tiny_voc_params, voc_object, write_image, write_voc


def robj(name, cx, cy, w, h, angle=0.0):
    return (f"<object><type>robndbox</type><name>{name}</name><difficult>0</difficult>"
            f"<robndbox><cx>{cx}</cx><cy>{cy}</cy><w>{w}</w><h>{h}</h><angle>{angle}</angle>"
            "</robndbox></object>")


def _import(tmp_path, axis, rotated):
    write_image(tmp_path / "images/a.png", size=(100, 80))
    write_voc(tmp_path / "labels/a.xml", "a.png", axis, size=(100, 80))
    write_voc(tmp_path / "labels_rotated/a.xml", "a", rotated, size=(100, 80))
    labels, report = import_dataset(tmp_path, tiny_voc_params(
        oriented_labels="labels_rotated"), progress=False)
    return labels.images[0], report


def test_same_order_pairs_by_position(tmp_path):
    # two people side by side: positions pair them even though boxes are close
    item, report = _import(tmp_path,
                           [voc_object("Person", 10, 10, 16, 24), voc_object("Person", 17, 10, 23, 24)],
                           [robj("Person", 13, 17, 6, 14, 0.1), robj("Person", 20, 17, 6, 14, 0.2)])
    assert report.ok
    assert [a.obox.angle for a in item.annotations] == [0.1, 0.2]
    assert [a.box.xyxy() for a in item.annotations] == [[10, 10, 16, 24], [17, 10, 23, 24]]


def test_different_order_falls_back_to_best_iou(tmp_path):
    item, report = _import(tmp_path,
                           [voc_object("Car", 10, 10, 30, 20), voc_object("Person", 50, 50, 56, 64),
                            voc_object("Car", 60, 10, 80, 20)],
                           [robj("Car", 70, 15, 20, 10, 0.3), robj("Car", 20, 15, 20, 10, 0.1),
                            robj("Person", 53, 57, 6, 14, 0.2)])
    assert report.ok, report.summary()
    assert [a.obox.angle for a in item.annotations] == [0.1, 0.2, 0.3]


def test_unmatched_oriented_box_is_reported_and_voc_box_kept(tmp_path):
    item, report = _import(tmp_path,
                           [voc_object("Car", 10, 10, 30, 20)],
                           [robj("Car", 20, 15, 20, 10, 0.1), robj("Car", 80, 60, 10, 10)])
    assert item.annotations[0].obox.angle == 0.1
    (p,) = report.problems
    assert p.file == "labels_rotated/a.xml" and "1 oriented box(es) match no" in p.message


def test_class_mismatch_leaves_voc_box_axis_aligned(tmp_path):
    item, report = _import(tmp_path, [voc_object("Car", 10, 10, 30, 20)],
                           [robj("Person", 20, 15, 20, 10, 0.1)])
    assert item.annotations[0].obox is None and len(report.problems) == 1
