//! LeNet-5 (LeCun et al., 1998), in the modern form of peers.md's W3: ReLU and max pooling.

use crate::network;

network! {
    /// LeNet-5 for 28 x 28 grey images: padding 2 makes the first convolution see 32 x 32.
    pub struct LeNet5: [1, 28, 28] {
        conv2d(6, kernel = 5, padding = 2), relu, max_pool2d(2) => [6, 14, 14],
        conv2d(16, kernel = 5), relu, max_pool2d(2) => [16, 5, 5],
        flatten => [400],
        linear(120), relu,
        linear(84), relu,
        linear(10),
    }
}

const _: () = assert!(LeNet5::<f32>::PARAMS == 61_706);
