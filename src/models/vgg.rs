//! VGG networks (Simonyan & Zisserman, 2014, "Very Deep Convolutional Networks for Large-Scale
//! Image Recognition").

use crate::network;

network! {
    /// VGG16, configuration D, exactly as torchvision's `vgg16()`: its parameter names are
    /// torchvision's state_dict keys (`features.0.weight` ... `classifier.6.bias`), so weights
    /// saved from torchvision as safetensors load with no renaming.
    pub struct Vgg16: [3, 224, 224] {
        features: {
            conv2d(64, kernel = 3, padding = 1) => [64, 224, 224], relu,
            conv2d(64, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [64, 112, 112],
            conv2d(128, kernel = 3, padding = 1), relu,
            conv2d(128, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [128, 56, 56],
            conv2d(256, kernel = 3, padding = 1), relu,
            conv2d(256, kernel = 3, padding = 1), relu,
            conv2d(256, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [256, 28, 28],
            conv2d(512, kernel = 3, padding = 1), relu,
            conv2d(512, kernel = 3, padding = 1), relu,
            conv2d(512, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [512, 14, 14],
            conv2d(512, kernel = 3, padding = 1), relu,
            conv2d(512, kernel = 3, padding = 1), relu,
            conv2d(512, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [512, 7, 7],
        },
        avgpool: { adaptive_avg_pool2d(7) },
        flatten => [25088],
        classifier: {
            linear(25088 => 4096), relu, dropout(0.5),
            linear(4096 => 4096), relu, dropout(0.5),
            linear(1000),
        },
    }
}

network! {
    /// The VGG-style network of peers.md's W4, for 32 x 32 images (CIFAR-sized).
    pub struct VggSmall: [3, 32, 32] {
        features: {
            conv2d(64, kernel = 3, padding = 1), relu,
            conv2d(64, kernel = 3, padding = 1), relu,
            max_pool2d(2),
            conv2d(128, kernel = 3, padding = 1), relu,
            conv2d(128, kernel = 3, padding = 1), relu,
            max_pool2d(2),
            conv2d(256, kernel = 3, padding = 1), relu,
            conv2d(256, kernel = 3, padding = 1), relu,
            max_pool2d(2) => [256, 4, 4],
        },
        flatten => [4096],
        classifier: {
            linear(256), relu,
            linear(10),
        },
    }
}

const _: () = assert!(Vgg16::<f32>::PARAMS == 138_357_544);
const _: () = assert!(VggSmall::<f32>::PARAMS == 2_196_810);
